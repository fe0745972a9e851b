//! Where a command's results go: standard output, or a file given with `--output` that is
//! replaced only when the command succeeds and that is never one of the command's inputs.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::CliError;

/// A command's output. Every write error becomes one [`CliError`] naming the output; standard
/// output closed by its reader is [`CliError::ClosedOutput`].
#[derive(Debug)]
pub(super) struct Output {
    writer: BufWriter<Sink>,
    /// "stdout" or the file's path, for error messages.
    name: String,
    /// The temporary file to rename over `target` on [`Output::finish`]; removed if dropped first.
    replace: Option<Replace>,
}

#[derive(Debug)]
enum Sink {
    Stdout(std::io::Stdout),
    File(File),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(s) => s.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// A temporary file that replaces `target` once renamed, and is removed if it never is.
#[derive(Debug)]
struct Replace {
    temp: PathBuf,
    target: PathBuf,
    renamed: bool,
}

impl Drop for Replace {
    /// The command failed before [`Output::finish`]: the target stays as it was.
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Output {
    /// Standard output.
    pub(super) fn stdout() -> Self {
        Output {
            writer: BufWriter::new(Sink::Stdout(std::io::stdout())),
            name: "stdout".into(),
            replace: None,
        }
    }

    /// The file `path`, refused when it is the same file as one of `inputs` (compared by
    /// identity, so hard and symbolic links are seen through).
    ///
    /// A regular file (or a path that does not exist yet) is written as a temporary file in the
    /// same directory, renamed over it by [`Output::finish`]: until then an existing file is
    /// untouched, and a failed command leaves it so. Anything else (`/dev/null`, a named pipe)
    /// is written directly.
    pub(super) fn file(path: &Path, inputs: &[&Path]) -> Result<Self, CliError> {
        let name = path.display().to_string();
        let fail = |e: std::io::Error| CliError::Message(format!("{name}: {e}"));
        let existing = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(fail(e)),
        };
        if existing.is_some() {
            let id = file_id(path).map_err(fail)?;
            for input in inputs {
                if file_id(input).is_ok_and(|input_id| input_id == id) {
                    return Err(CliError::Message(format!(
                        "--output {name} is the input file {}: refusing to overwrite it",
                        input.display()
                    )));
                }
            }
        }
        let (file, replace) = match existing {
            Some(m) if !m.is_file() => (OpenOptions::new().write(true).open(path).map_err(fail)?, None),
            _ => {
                // Through a symbolic link, the file it points to is the one replaced.
                let target = match existing {
                    Some(_) => std::fs::canonicalize(path).map_err(fail)?,
                    None => path.to_path_buf(),
                };
                let (file, temp) = create_temp(&target).map_err(fail)?;
                let replace = Replace { temp, target, renamed: false };
                if let Some(m) = existing {
                    file.set_permissions(m.permissions()).map_err(fail)?;
                }
                (file, Some(replace))
            }
        };
        Ok(Output { writer: BufWriter::new(Sink::File(file)), name, replace })
    }

    /// Writes `text` as it is.
    pub(super) fn write_str(&mut self, text: &str) -> Result<(), CliError> {
        self.writer.write_all(text.as_bytes()).map_err(|e| self.error(e))
    }

    /// Writes `value` as one JSON line.
    pub(super) fn json_line(&mut self, value: &serde_json::Value) -> Result<(), CliError> {
        let mut line = value.to_string();
        line.push('\n');
        self.write_str(&line)
    }

    /// Flushes everything and, for a replaced file, renames the temporary file over the target.
    pub(super) fn finish(mut self) -> Result<(), CliError> {
        self.writer.flush().map_err(|e| self.error(e))?;
        let Some(replace) = &self.replace else { return Ok(()) };
        if let Sink::File(f) = self.writer.get_ref() {
            f.sync_all().map_err(|e| self.error(e))?;
        }
        std::fs::rename(&replace.temp, &replace.target).map_err(|e| self.error(e))?;
        if let Some(replace) = &mut self.replace {
            replace.renamed = true;
        }
        Ok(())
    }

    fn error(&self, e: std::io::Error) -> CliError {
        if e.kind() == ErrorKind::BrokenPipe && matches!(self.writer.get_ref(), Sink::Stdout(_)) {
            CliError::ClosedOutput
        } else {
            CliError::Message(format!("{}: {e}", self.name))
        }
    }
}

/// A new file beside `target` (same directory, so a rename replaces `target` atomically).
fn create_temp(target: &Path) -> std::io::Result<(File, PathBuf)> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let base = target.file_name().map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let mut attempt = 0u32;
    loop {
        let temp = dir.join(format!(".{base}.{}.{attempt}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// What makes two paths the same file: device and inode on unix.
#[cfg(unix)]
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// What makes two paths the same file: the canonical path where there are no inodes.
#[cfg(not(unix))]
fn file_id(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}
