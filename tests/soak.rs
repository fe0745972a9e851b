//! Soak: 1 000 mixed-length texts (1 to 300 words) embedded in one process through one
//! `Embedder`; after a warm-up of 100 texts (which has seen every length), the resident memory
//! (VmRSS) may grow by at most 256 KiB. The only test of this binary, so nothing else runs in the
//! process meanwhile. `examples/soak.rs` runs the long version.

mod common;

use common::soak::{rss_kib, soak_text, words, BUCKETS};
use stepembed::Embedder;

const TEXTS: usize = 1000;
const MAX_GROWTH_KIB: u64 = 256;

#[test]
fn a_thousand_texts_do_not_grow_resident_memory_after_warm_up() {
    let fixture_texts = common::texts();
    let words = words(&fixture_texts);
    let mut embedder = Embedder::open(common::fixture("models/bert-tiny-Q8_0.gguf")).unwrap();
    let mut after_warm_up = 0;
    let mut peak_after = 0;
    for i in 0..TEXTS {
        let v = embedder.embed(&soak_text(&words, i)).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "text {i}");
        if i + 1 == BUCKETS {
            after_warm_up = rss_kib();
        } else if i + 1 > BUCKETS {
            peak_after = peak_after.max(rss_kib());
        }
    }
    let growth = peak_after.saturating_sub(after_warm_up);
    eprintln!("VmRSS after warm-up {after_warm_up} KiB, highest after {peak_after} KiB: +{growth} KiB");
    assert!(growth <= MAX_GROWTH_KIB, "resident memory grew by {growth} KiB after warm-up");
}
