//! Fuzzes the ledger restore's row decoder: the bytes are split into a
//! stored histogram text, answer and RDP blob, as a tampered or damaged
//! ledger file could hold them. A row is refused as corrupt, or restores
//! into a budget that stays finite and non-negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pate_ledger::decode_query;
use pate_privacy::budget::Budget;
use pate_privacy::{default_orders, Mechanism};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let answer = i64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let split = 10 + usize::from(data[8]).min(data.len() - 10);
    let histogram = String::from_utf8_lossy(&data[10..split]);
    let rdp = &data[split..];
    // Few orders, so that random blobs sometimes have the right length.
    let orders: Vec<f64> = default_orders().into_iter().take(usize::from(data[9] % 4) + 1).collect();
    let Ok(q) = decode_query(&histogram, answer, rdp, orders.len()) else { return };
    assert_eq!(q.rdp.len(), orders.len());
    assert!(q.answer.is_some() == (answer != -1));
    let mut b = Budget::new(Mechanism::GnMax { sigma: 10.0 }, 1.0, 1e-5, orders).expect("budget");
    b.restore(&q.rdp, q.answer.is_some());
    let spent = b.spent();
    assert!(spent.is_finite() && spent >= 0.0, "spent {spent}");
});
