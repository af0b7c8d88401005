//! The pate.v1 gRPC protocol: generated tonic/prost code plus the checked
//! conversion of wire tensors into sample batches, and the plumbing every
//! party shares: mutual TLS ([`tls`]), roles ([`auth`]), provisioning
//! ([`certs`]), serving ([`runtime`]) and reaching a party that is not up
//! yet ([`retry`]).
//!
//! Only this crate knows prost types. The other crates convert at the edge
//! with [`Samples::try_from`], so malformed input becomes a clear
//! `invalid_argument` status instead of a panic deep in a model.

/// Generated code for package `pate.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("pate.v1");
}

pub mod auth;
pub mod certs;
pub mod config;
pub mod metrics;
pub mod retry;
pub mod runtime;
pub mod tls;

pub use v1::{Dtype, Tensor};

/// Largest gRPC message any party sends or accepts (a batch of samples and
/// their answers): one value for every server and client of the protocol.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Why a wire tensor was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    /// The request carried no tensor at all.
    #[error("request has no samples tensor")]
    MissingSamples,
    /// The shape is not `[batch, rows, cols]`.
    #[error("samples shape must be [batch, rows, cols], got {0:?}")]
    BadRank(Vec<u32>),
    /// A batch of zero samples.
    #[error("empty batch: shape {0:?} holds no samples")]
    EmptyBatch(Vec<u32>),
    /// Unknown or unspecified dtype.
    #[error("unsupported dtype {0} (use DTYPE_U8 or DTYPE_F32)")]
    BadDtype(i32),
    /// Byte length does not match the shape and dtype.
    #[error("samples data is {got} bytes, shape {shape:?} as {dtype} needs {want}")]
    BadLength {
        /// Declared shape.
        shape: Vec<u32>,
        /// Declared dtype name.
        dtype: &'static str,
        /// Bytes received.
        got: usize,
        /// Bytes the shape needs.
        want: usize,
    },
    /// A float sample is NaN, infinite or outside [0, 1].
    #[error("sample value at flat index {index} is {value}, expected a finite value in [0, 1]")]
    BadValue {
        /// Flat element index.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// The shape does not match what the receiver serves.
    #[error("sample shape {got:?} does not match the model's input shape {want:?}")]
    ShapeMismatch {
        /// Per-sample `[rows, cols]` received.
        got: [usize; 2],
        /// Per-sample `[rows, cols]` expected.
        want: [usize; 2],
    },
    /// More samples than the receiver accepts in one call.
    #[error("batch of {got} samples exceeds the limit of {max}")]
    BatchTooLarge {
        /// Samples received.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// Sample keys that are not a whole number of keys.
    #[error("sample_keys is {0} bytes, not a whole number of {KEY_BYTES}-byte keys")]
    BadKeys(usize),
}

impl From<ProtoError> for tonic::Status {
    fn from(err: ProtoError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// Bytes of one sample key (a SHA-256; see [`Samples::keys`]).
pub const KEY_BYTES: usize = 32;

/// The key of one sample in a vote by key (`VoteRequest.sample_keys`): the
/// SHA-256 of its row-major u8 pixels. A teacher's feature cache
/// (`pate_ml::feature_cache`) files its rows under the same digest.
pub fn sample_key(pixels: &[u8]) -> [u8; KEY_BYTES] {
    use sha2::{Digest, Sha256};
    Sha256::digest(pixels).into()
}

/// The keys of a vote by key, checked: at least one whole key and at most
/// `max_batch`.
pub fn parse_keys(bytes: &[u8], max_batch: usize) -> Result<Vec<[u8; KEY_BYTES]>, ProtoError> {
    if bytes.is_empty() {
        return Err(ProtoError::MissingSamples);
    }
    if bytes.len() % KEY_BYTES != 0 {
        return Err(ProtoError::BadKeys(bytes.len()));
    }
    let n = bytes.len() / KEY_BYTES;
    if n > max_batch {
        return Err(ProtoError::BatchTooLarge { got: n, max: max_batch });
    }
    Ok(bytes.chunks_exact(KEY_BYTES).map(|k| k.try_into().expect("whole keys")).collect())
}

/// A validated batch of grey-scale samples as raw pixels, row-major.
///
/// Floats in [0, 1] are quantised to bytes (`round(x * 255)`), which is exact
/// for images that came from bytes, the only kind the framework trains on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Samples {
    /// Number of samples.
    pub n: usize,
    /// Rows of one sample.
    pub rows: usize,
    /// Columns of one sample.
    pub cols: usize,
    /// `n * rows * cols` pixels.
    pub pixels: Vec<u8>,
}

impl Samples {
    /// Checks the per-sample shape and the batch size a receiver accepts.
    pub fn check(&self, rows: usize, cols: usize, max_batch: usize) -> Result<(), ProtoError> {
        if [self.rows, self.cols] != [rows, cols] {
            return Err(ProtoError::ShapeMismatch { got: [self.rows, self.cols], want: [rows, cols] });
        }
        if self.n > max_batch {
            return Err(ProtoError::BatchTooLarge { got: self.n, max: max_batch });
        }
        Ok(())
    }

    /// The wire form (u8 dtype).
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            shape: vec![self.n as u32, self.rows as u32, self.cols as u32],
            dtype: Dtype::U8 as i32,
            data: self.pixels.clone(),
        }
    }

    /// Every sample's key ([`sample_key`]), concatenated: the
    /// `sample_keys` of a vote by key.
    pub fn keys(&self) -> Vec<u8> {
        let size = self.rows * self.cols;
        self.pixels.chunks_exact(size).flat_map(sample_key).collect()
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Samples {
        let size = self.rows * self.cols;
        let mut pixels = Vec::with_capacity(indices.len() * size);
        indices.iter().for_each(|&i| pixels.extend_from_slice(&self.pixels[i * size..][..size]));
        Samples { n: indices.len(), rows: self.rows, cols: self.cols, pixels }
    }

    /// Parses an optional wire tensor, as found in request messages.
    pub fn from_request(tensor: Option<Tensor>) -> Result<Self, ProtoError> {
        tensor.ok_or(ProtoError::MissingSamples)?.try_into()
    }
}

impl TryFrom<Tensor> for Samples {
    type Error = ProtoError;

    fn try_from(t: Tensor) -> Result<Self, ProtoError> {
        let [n, rows, cols] = <[u32; 3]>::try_from(t.shape.as_slice()).map_err(|_| ProtoError::BadRank(t.shape.clone()))?;
        let (n, rows, cols) = (n as usize, rows as usize, cols as usize);
        if n == 0 || rows == 0 || cols == 0 {
            return Err(ProtoError::EmptyBatch(t.shape));
        }
        let elems = n
            .checked_mul(rows)
            .and_then(|x| x.checked_mul(cols))
            .ok_or_else(|| ProtoError::BadRank(t.shape.clone()))?;
        let pixels = match Dtype::try_from(t.dtype) {
            Ok(Dtype::U8) => {
                check_len(&t, "u8", elems)?;
                t.data
            }
            Ok(Dtype::F32) => {
                check_len(&t, "f32", elems.saturating_mul(4))?;
                floats_to_pixels(&t.data)?
            }
            _ => return Err(ProtoError::BadDtype(t.dtype)),
        };
        Ok(Samples { n, rows, cols, pixels })
    }
}

fn check_len(t: &Tensor, dtype: &'static str, want: usize) -> Result<(), ProtoError> {
    if t.data.len() != want {
        return Err(ProtoError::BadLength { shape: t.shape.clone(), dtype, got: t.data.len(), want });
    }
    Ok(())
}

fn floats_to_pixels(data: &[u8]) -> Result<Vec<u8>, ProtoError> {
    data.chunks_exact(4)
        .enumerate()
        .map(|(index, b)| {
            let value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !(0.0..=1.0).contains(&value) {
                return Err(ProtoError::BadValue { index, value });
            }
            Ok((value * 255.0).round() as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[u32], dtype: Dtype, data: Vec<u8>) -> Tensor {
        Tensor { shape: shape.to_vec(), dtype: dtype as i32, data }
    }

    #[test]
    fn u8_round_trip() {
        let s = Samples { n: 2, rows: 2, cols: 3, pixels: (0..12).collect() };
        assert_eq!(Samples::try_from(s.to_tensor()), Ok(s));
    }

    #[test]
    fn f32_is_quantised() {
        let data: Vec<u8> = [0.0f32, 1.0, 0.5, 2.0 / 255.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = Samples::try_from(tensor(&[1, 2, 2], Dtype::F32, data)).expect("valid");
        assert_eq!(s.pixels, vec![0, 255, 128, 2]);
    }

    #[test]
    fn rejects_nan_and_out_of_range() {
        for bad in [f32::NAN, f32::INFINITY, -0.1, 1.5] {
            let data: Vec<u8> = [0.0f32, bad].iter().flat_map(|x| x.to_le_bytes()).collect();
            let err = Samples::try_from(tensor(&[1, 1, 2], Dtype::F32, data)).expect_err("must reject");
            assert!(matches!(err, ProtoError::BadValue { index: 1, .. }), "{err}");
        }
    }

    #[test]
    fn rejects_bad_shapes_lengths_and_dtypes() {
        assert!(matches!(Samples::try_from(tensor(&[4, 4], Dtype::U8, vec![0; 16])), Err(ProtoError::BadRank(_))));
        assert!(matches!(Samples::try_from(tensor(&[0, 28, 28], Dtype::U8, vec![])), Err(ProtoError::EmptyBatch(_))));
        assert!(matches!(Samples::try_from(tensor(&[2, 2, 2], Dtype::U8, vec![0; 7])), Err(ProtoError::BadLength { got: 7, want: 8, .. })));
        assert!(matches!(Samples::try_from(tensor(&[1, 2, 2], Dtype::F32, vec![0; 4])), Err(ProtoError::BadLength { want: 16, .. })));
        assert!(matches!(Samples::try_from(tensor(&[1, 1, 1], Dtype::Unspecified, vec![0])), Err(ProtoError::BadDtype(0))));
        assert!(matches!(Samples::try_from(tensor(&[u32::MAX, u32::MAX, u32::MAX], Dtype::U8, vec![])), Err(ProtoError::BadRank(_))));
        assert_eq!(Samples::from_request(None), Err(ProtoError::MissingSamples));
    }

    #[test]
    fn check_enforces_shape_and_batch_limit() {
        let s = Samples { n: 3, rows: 2, cols: 2, pixels: vec![0; 12] };
        assert!(s.check(2, 2, 3).is_ok());
        assert!(matches!(s.check(28, 28, 3), Err(ProtoError::ShapeMismatch { .. })));
        assert!(matches!(s.check(2, 2, 2), Err(ProtoError::BatchTooLarge { got: 3, max: 2 })));
        let status: tonic::Status = ProtoError::BatchTooLarge { got: 3, max: 2 }.into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn keys_are_whole_checked_and_select_keeps_order() {
        let s = Samples { n: 3, rows: 1, cols: 2, pixels: vec![1, 2, 3, 4, 5, 6] };
        let keys = s.keys();
        assert_eq!(keys.len(), 3 * KEY_BYTES);
        assert_eq!(keys[KEY_BYTES..2 * KEY_BYTES], sample_key(&[3, 4]));
        assert_ne!(sample_key(&[3, 4]), sample_key(&[4, 3]));
        let parsed = parse_keys(&keys, 3).expect("valid");
        assert_eq!(parsed[2], sample_key(&[5, 6]));
        assert_eq!(parse_keys(&keys, 2), Err(ProtoError::BatchTooLarge { got: 3, max: 2 }));
        assert_eq!(parse_keys(&keys[..40], 3), Err(ProtoError::BadKeys(40)));
        assert_eq!(parse_keys(&[], 3), Err(ProtoError::MissingSamples));
        let picked = s.select(&[2, 0]);
        assert_eq!((picked.n, picked.pixels), (2, vec![5, 6, 1, 2]));
    }

    /// The property-test twin of `fuzz/fuzz_targets/tensor.rs`: any tensor
    /// (shapes up to u32::MAX, unknown dtypes, any bytes, or any protobuf
    /// bytes) is converted exactly or refused, never a panic.
    mod props {
        use super::*;
        use prost::Message;
        use proptest::collection::vec;
        use proptest::prelude::*;

        fn check(t: Tensor) {
            let (dtype, len) = (t.dtype, t.data.len());
            if let Ok(s) = Samples::try_from(t) {
                assert!(s.n > 0 && s.rows > 0 && s.cols > 0);
                assert_eq!(s.pixels.len(), s.n * s.rows * s.cols);
                assert_eq!(len, if dtype == Dtype::F32 as i32 { 4 * s.pixels.len() } else { s.pixels.len() });
                assert_eq!(Samples::try_from(s.to_tensor()).as_ref(), Ok(&s));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_tensor_is_converted_or_refused(
                shape in vec(prop_oneof![0u32..5, any::<u32>()], 0..5),
                dtype in -1i32..4,
                data in vec(any::<u8>(), 0..130),
            ) {
                check(Tensor { shape, dtype, data });
            }

            #[test]
            fn any_protobuf_bytes_are_converted_or_refused(bytes in vec(any::<u8>(), 0..200)) {
                if let Ok(t) = Tensor::decode(bytes.as_slice()) {
                    check(t);
                }
            }
        }
    }
}
