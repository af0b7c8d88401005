//! Fuzzes the wire tensor conversion (`Samples::try_from(Tensor)`) that every
//! Vote and Label request goes through: the tensor is decoded from protobuf
//! bytes, as the server sees it, or built from the raw parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pate_proto::{Samples, Tensor};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tensor::decode(data) else { return };
    let (dtype, len) = (t.dtype, t.data.len());
    if let Ok(s) = Samples::try_from(t) {
        assert!(s.n > 0 && s.rows > 0 && s.cols > 0);
        assert_eq!(s.pixels.len(), s.n * s.rows * s.cols);
        assert_eq!(len, if dtype == pate_proto::Dtype::F32 as i32 { 4 * s.pixels.len() } else { s.pixels.len() });
        // The u8 wire form round-trips.
        assert_eq!(Samples::try_from(s.to_tensor()).as_ref(), Ok(&s));
    }
});
