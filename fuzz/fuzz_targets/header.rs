//! The whole GGUF loader on arbitrary bytes: header, every KV (arrays walked and read back),
//! the tensor table, the table checks, and the model loader on top. Must never panic, hang or
//! allocate from a length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepembed_core::gguf::{self, ArrayReader, Event, Reader, TensorInfo, Value};
use stepembed_core::io::SliceSource;
use stepembed_core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed_core::model::{LayerRefs, Model, ModelLoader};
use stepembed_core::tokenizer::Lookup;
use stepembed_core::Error;

fuzz_target!(|data: &[u8]| {
    let mut io = SliceSource::new(data);
    let mut scratch = [0u8; gguf::MIN_SCRATCH];
    let Ok(mut reader) = Reader::new(&mut scratch) else { return };
    let mut arrays = [None; 4];
    let mut table = [TensorInfo {
        name: stepembed_core::Name::new(""),
        ty: gguf::GgmlType::F32,
        n_dims: 1,
        ne: [1; 4],
        offset: 0,
        n_bytes: 0,
    }; 64];
    let mut n = 0;
    let mut done = false;
    // Each step makes progress through a file of at most `data.len()` bytes.
    for _ in 0..data.len().saturating_mul(4).saturating_add(64) {
        match reader.step(&mut io) {
            Err(_) => return,
            Ok(Event::Kv { value: Value::Array(a), .. }) => {
                if let Some(slot) = arrays.iter_mut().find(|s| s.is_none()) {
                    *slot = Some(a);
                }
            }
            Ok(Event::Tensor(t)) => {
                assert!(t.end() <= data.len() as u64, "tensor outside the file");
                if let Some(slot) = table.get_mut(n) {
                    *slot = t;
                    n += 1;
                }
            }
            Ok(Event::Done(layout)) => {
                assert!(layout.data_offset >= layout.tensor_info_offset);
                let _ = gguf::check_table(&mut table[..n]);
                done = true;
                break;
            }
            Ok(_) => {}
        }
    }
    assert!(done, "the reader neither finished nor failed within its step bound");
    // Arrays the reader validated read back element by element without error.
    let mut buf = [0u8; 64];
    for a in arrays.into_iter().flatten() {
        let mut elems = ArrayReader::new(a, &mut buf);
        for _ in 0..a.count.min(10_000) {
            match elems.next(&mut io) {
                Ok(Some(_)) => {}
                other => panic!("validated array failed to read back: {other:?}"),
            }
        }
    }
    // The model loader, which checks what the engine needs on top of the format.
    let mut io = SliceSource::new(data);
    let mut scratch = [0u8; 2048];
    let mut layers = [LayerRefs::default(); 8];
    if let Ok(mut loader) = ModelLoader::new(&mut scratch, &mut layers) {
        if let Ok(meta) = loader.load(&mut io) {
            let n = meta.hparams.n_layer;
            let model = Model::new(meta, loader.layers()).expect("a loaded model is consistent");
            assert!(n <= 8);
            // Whatever the loader accepts, a job runs on without an internal error.
            let Ok(plan) = Plan::smallest(&model, Limits::tokens(4)) else { return };
            let mut arena = vec![0u8; plan.arena_bytes()];
            let ids = [meta.vocab.cls(), meta.vocab.sep()];
            let options = JobOptions { budget: 1 << 20, ..JobOptions::default() };
            let mut job = Job::new(model, &plan, &mut arena, Input::Ids(&ids), Lookup::Scan, options)
                .expect("a planned job starts");
            for _ in 0..100_000 {
                match job.step(&mut io) {
                    Ok(Step::Pending(_)) => {}
                    Ok(Step::Done(_)) => return,
                    Err(Error::InvalidState) => panic!("internal invariant broken"),
                    Err(_) => return,
                }
            }
            panic!("job did not finish");
        }
    }
});
