//! The served aggregator draws its noise from OpenSSL: the binary links
//! OpenSSL's `RAND_priv_bytes`, which OpenDP calls only when built with its
//! `use-openssl` feature (its fallback is `rand::thread_rng`, non-secure).

mod common;

#[test]
fn the_aggregator_binary_links_openssl_rand_priv_bytes() {
    let bytes = std::fs::read(common::bin("pate-aggregator")).expect("read pate-aggregator");
    // The symbol's own name, NUL-terminated in the symbol table; a prefixed
    // name (another TLS library's private copy) does not count.
    let symbol = b"RAND_priv_bytes\0";
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let found = bytes.windows(symbol.len() + 1).any(|w| &w[1..] == symbol && !ident(w[0]));
    assert!(
        found,
        "pate-aggregator does not link RAND_priv_bytes: OpenDP was built without use-openssl"
    );
}
