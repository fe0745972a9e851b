//! The model loader refuses what the engine cannot compute, at load time, with errors that name
//! what is wrong.

mod common;

use stepembed::core::gguf::GgmlType;
use stepembed::core::io::SliceSource;
use stepembed::core::model::{LayerRefs, ModelLoader};
use stepembed::core::{Error, Malformed, Unsupported};

fn load(bytes: &[u8]) -> Result<usize, Error> {
    let mut scratch = vec![0u8; 4096];
    let mut layers = vec![LayerRefs::default(); 8];
    let meta = ModelLoader::new(&mut scratch, &mut layers)?.load(&mut SliceSource::new(bytes))?;
    Ok(meta.hparams.n_layer)
}

/// Where tensor `name`'s type id is in the file (its info: name, n_dims, ne…, type, offset).
fn type_field(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes.windows(key.len()).position(|w| w == key).expect("tensor info") + key.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims
}

#[test]
fn every_fixture_model_loads() {
    for model in common::MODELS {
        assert!(load(&common::read(&format!("models/{model}.gguf"))).is_ok(), "{model}");
    }
}

#[test]
fn a_tensor_type_the_engine_cannot_compute_fails_the_load_naming_it() {
    let mut bytes = common::read("models/bert-tiny-F16.gguf");
    let at = type_field(&bytes, "blk.1.attn_q.weight");
    // I16 has F16's size, so the tensor chain still holds: the type is what is refused.
    bytes[at..at + 4].copy_from_slice(&GgmlType::I16.id().to_le_bytes());
    match load(&bytes) {
        Err(Error::Unsupported(Unsupported::TensorType { tensor, ty })) => {
            assert_eq!(tensor.as_str(), "blk.1.attn_q.weight");
            assert_eq!(ty, GgmlType::I16);
            let msg = Error::Unsupported(Unsupported::TensorType { tensor, ty }).to_string();
            assert!(msg.contains("blk.1.attn_q.weight") && msg.contains("I16"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // A type of another size breaks the chain of tensor data at the next tensor.
    let mut bytes = common::read("models/bert-tiny-Q8_0.gguf");
    let at = type_field(&bytes, "blk.1.attn_q.weight");
    bytes[at..at + 4].copy_from_slice(&GgmlType::Q8_1.id().to_le_bytes());
    assert!(matches!(load(&bytes), Err(Error::Malformed { what: Malformed::UnexpectedOffset { .. }, .. })));
}

#[test]
fn other_architectures_and_missing_tensors_are_refused() {
    let original = common::read("models/bert-tiny-Q8_0.gguf");
    let find = |b: &[u8], s: &[u8]| b.windows(s.len()).position(|w| w == s).unwrap();

    let mut bytes = original.clone();
    let at = find(&bytes, b"\x04\x00\x00\x00\x00\x00\x00\x00bert");
    bytes[at + 8..at + 12].copy_from_slice(b"gpt2");
    match load(&bytes) {
        Err(Error::Unsupported(Unsupported::Architecture(a))) => assert_eq!(a.as_str(), "gpt2"),
        other => panic!("{other:?}"),
    }

    let mut bytes = original.clone();
    let at = find(&bytes, b"blk.0.ffn_up.weight");
    bytes[at..at + 19].copy_from_slice(b"blk.0.ffn_xx.weight");
    match load(&bytes) {
        Err(Error::Malformed { what: Malformed::MissingTensor(t), .. }) => {
            assert_eq!(t.as_str(), "blk.0.ffn_up.weight")
        }
        other => panic!("{other:?}"),
    }

    // Every bert checkpoint has its biases: a renamed one is refused by name, not computed
    // without.
    let mut bytes = original.clone();
    let at = find(&bytes, b"blk.0.attn_output.bias");
    bytes[at..at + 22].copy_from_slice(b"blk.0.attn_output.biaz");
    match load(&bytes) {
        Err(Error::Malformed { what: Malformed::MissingTensor(t), .. }) => {
            assert_eq!(t.as_str(), "blk.0.attn_output.bias")
        }
        other => panic!("{other:?}"),
    }

    // A tensor the architecture does not have (separate Q in a fused-QKV nomic-bert layer).
    let mut bytes = common::read("models/nomic-small-2L-Q4_K_M.gguf");
    let at = find(&bytes, b"blk.1.ffn_up.weight");
    bytes[at..at + 19].copy_from_slice(b"blk.1.attn_q.weight");
    match load(&bytes) {
        Err(Error::Malformed { what: Malformed::UnexpectedTensor(t), .. }) => {
            assert_eq!(t.as_str(), "blk.1.attn_q.weight")
        }
        other => panic!("{other:?}"),
    }

    let mut bytes = original.clone();
    let at = find(&bytes, b"bert.block_count");
    bytes[at..at + 16].copy_from_slice(b"bert.block_cnt__");
    assert!(matches!(
        load(&bytes),
        Err(Error::Malformed { what: Malformed::MissingKey("bert.block_count"), .. })
    ));

    // Too little layer storage: the error says how much is needed.
    let mut scratch = vec![0u8; 4096];
    let mut layers = vec![LayerRefs::default(); 1];
    let err = ModelLoader::new(&mut scratch, &mut layers).unwrap().load(&mut SliceSource::new(&original));
    assert_eq!(err.unwrap_err(), Error::BufferTooSmall { needed: 2, given: 1 });
}
