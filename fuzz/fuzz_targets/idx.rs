//! Fuzzes the IDX decoders (images and labels files, gzipped or raw): any
//! bytes must give either a clear error or items that fill the body exactly.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pate_ml::data::{decode_images, decode_labels, decompress_if_gz};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.idx");
    // The gzip layer first, as `read_maybe_gz` does.
    let Ok(bytes) = decompress_if_gz(data.to_vec()) else { return };
    if let Ok(images) = decode_images(path, &bytes) {
        assert!(images.rows > 0 && images.cols > 0);
        assert_eq!(images.data.len(), images.len() * images.rows * images.cols);
        assert_eq!(images.data.len() + 16, bytes.len());
        if !images.is_empty() {
            assert_eq!(images.item(images.len() - 1).len(), images.rows * images.cols);
        }
    }
    if let Ok(labels) = decode_labels(path, &bytes) {
        assert_eq!(labels.len() + 8, bytes.len());
    }
});
