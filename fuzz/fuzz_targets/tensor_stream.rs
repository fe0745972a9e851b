//! Tensor streaming on arbitrary files: every tensor the reader accepts streams in chunks of
//! whole blocks with any buffer size, and the non-finite scan never fails on the bytes' account.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepembed_core::gguf::{self, Event, Reader, TensorStream};
use stepembed_core::io::SliceSource;
use stepembed_core::Error;

fuzz_target!(|input: (u16, &[u8])| {
    let (buf_len, data) = input;
    let mut io = SliceSource::new(data);
    let mut scratch = [0u8; gguf::DEFAULT_SCRATCH];
    let Ok(mut reader) = Reader::new(&mut scratch) else { return };
    let mut chunk = vec![0u8; usize::from(buf_len % 4096)];
    for _ in 0..data.len().saturating_mul(4).saturating_add(64) {
        let t = match reader.step(&mut io) {
            Ok(Event::Tensor(t)) => t,
            Ok(Event::Done(_)) | Err(_) => return,
            Ok(_) => continue,
        };
        let mut io2 = SliceSource::new(data);
        let mut stream = TensorStream::new(t);
        let block = t.ty.block_bytes() as usize;
        let mut total = 0u64;
        loop {
            match stream.next_chunk(&mut io2, &mut chunk) {
                Ok(Some(c)) => {
                    assert!(!c.is_empty() && c.len() % block == 0, "chunk of partial blocks");
                    total += c.len() as u64;
                }
                Ok(None) => break,
                Err(Error::BufferTooSmall { .. }) => {
                    assert!(chunk.len() < block);
                    break;
                }
                Err(e) => panic!("validated tensor failed to stream: {e:?}"),
            }
        }
        assert!(total == t.n_bytes || chunk.len() < block);
        let _ = gguf::scan_non_finite(&mut io2, &t, &mut chunk);
    }
});
