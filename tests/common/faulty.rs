//! A byte source that misbehaves on purpose, as `embedded_io::{Read, Seek}` and (through
//! [`StdFaulty`]) as `std::io::{Read, Seek}`: at the operation a [`FaultPlan`] names it fails a
//! read with an error, reports an early end of file, or fails a seek — once; and it may return
//! honest short reads throughout. A shared [`Trace`] tells the test what happened.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use embedded_io::{ErrorKind, SeekFrom};

use super::tiny_bert::Rng;

/// The one fault a source injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The first read at or after the chosen operation fails with this kind.
    ReadError(ErrorKind),
    /// The first read at or after the chosen operation returns 0 bytes, as if the file ended.
    EarlyEof,
    /// The first seek at or after the chosen operation fails with this kind.
    SeekError(ErrorKind),
}

/// The error kinds injected (none is `Interrupted`, which callers may retry).
pub const KINDS: [ErrorKind; 4] =
    [ErrorKind::Other, ErrorKind::TimedOut, ErrorKind::BrokenPipe, ErrorKind::PermissionDenied];

/// What a source does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPlan {
    /// The fault and the operation (reads and seeks counted together from 0) it waits for.
    pub fault: Option<(u64, Fault)>,
    /// Each read returns between 1 and this many bytes (never more than asked, never 0 before
    /// the real end): honest short reads. `None`: reads are filled whole.
    pub short_reads: Option<usize>,
}

/// Where and when the fault fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub fault: Fault,
    /// The operation index it fired at.
    pub op: u64,
    /// The cursor position at that operation (for a read: where it would have read).
    pub pos: u64,
}

/// What a source did, shared with the test while the source is owned by an `Embedder`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trace {
    /// Reads and seeks so far.
    pub ops: u64,
    pub fired: Option<Fired>,
}

/// The misbehaving source over `data`.
#[derive(Debug)]
pub struct FaultySource {
    data: Arc<[u8]>,
    pos: u64,
    plan: FaultPlan,
    rng: Rng,
    trace: Arc<Mutex<Trace>>,
}

impl FaultySource {
    /// A source over `data` following `plan` (short-read lengths drawn from `seed`), and the
    /// handle on its trace.
    pub fn new(data: Arc<[u8]>, plan: FaultPlan, seed: u64) -> (Self, Arc<Mutex<Trace>>) {
        let trace = Arc::new(Mutex::new(Trace::default()));
        (FaultySource { data, pos: 0, plan, rng: Rng::new(seed), trace: trace.clone() }, trace)
    }

    /// Counts an operation; whether the pending fault fires on it (`is_read` says which kind).
    fn take_fault(&mut self, is_read: bool) -> Option<Fault> {
        let mut trace = self.trace.lock().unwrap();
        let op = trace.ops;
        trace.ops += 1;
        let (at, fault) = self.plan.fault?;
        let wants_read = !matches!(fault, Fault::SeekError(_));
        if trace.fired.is_some() || op < at || wants_read != is_read {
            return None;
        }
        trace.fired = Some(Fired { fault, op, pos: self.pos });
        Some(fault)
    }

    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        match self.take_fault(true) {
            Some(Fault::ReadError(kind)) => return Err(kind),
            Some(Fault::EarlyEof) => return Ok(0),
            _ => {}
        }
        let start = usize::try_from(self.pos).unwrap_or(usize::MAX).min(self.data.len());
        let rest = &self.data[start..];
        let mut n = rest.len().min(buf.len());
        if let Some(max) = self.plan.short_reads {
            n = n.min(1 + self.rng.below(max as u64) as usize);
        }
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n as u64;
        Ok(n)
    }

    fn seek_to(&mut self, pos: SeekFrom) -> Result<u64, ErrorKind> {
        if let Some(Fault::SeekError(kind)) = self.take_fault(false) {
            return Err(kind);
        }
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => (self.data.len() as u64).checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or(ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

impl embedded_io::ErrorType for FaultySource {
    type Error = ErrorKind;
}

impl embedded_io::Read for FaultySource {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        self.read_into(buf)
    }
}

impl embedded_io::Seek for FaultySource {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, ErrorKind> {
        self.seek_to(pos)
    }
}

/// The same source as `std::io::{Read, Seek}` (wrap it in `embedded_io_adapters::std::FromStd`
/// to hand it to an `Embedder`, as files are).
#[derive(Debug)]
pub struct StdFaulty(pub FaultySource);

/// The std kind that `FromStd` maps back to the injected `kind`.
fn std_kind(kind: ErrorKind) -> std::io::ErrorKind {
    match kind {
        ErrorKind::TimedOut => std::io::ErrorKind::TimedOut,
        ErrorKind::BrokenPipe => std::io::ErrorKind::BrokenPipe,
        ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
        ErrorKind::InvalidInput => std::io::ErrorKind::InvalidInput,
        _ => std::io::ErrorKind::Other,
    }
}

impl std::io::Read for StdFaulty {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_into(buf).map_err(|k| std::io::Error::new(std_kind(k), "injected read fault"))
    }
}

impl std::io::Seek for StdFaulty {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let pos = match pos {
            std::io::SeekFrom::Start(p) => SeekFrom::Start(p),
            std::io::SeekFrom::End(d) => SeekFrom::End(d),
            std::io::SeekFrom::Current(d) => SeekFrom::Current(d),
        };
        self.0.seek_to(pos).map_err(|k| std::io::Error::new(std_kind(k), "injected seek fault"))
    }
}
