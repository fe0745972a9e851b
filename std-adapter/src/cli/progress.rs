//! What `embed` tells the user on stderr while it works: a progress bar or spinner with rates
//! (only on a terminal), and warnings (which `--quiet` silences with the progress).

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How many texts the command will embed, as far as it knows before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Total {
    /// The texts are arguments: this many.
    Known(usize),
    /// The texts are streamed from a file or stdin.
    Unknown,
}

/// What progress to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Display {
    /// A bar with an ETA, for a known number of texts.
    Bar(usize),
    /// A spinner with the counts and rates, for a stream.
    Spinner,
}

/// Fewest argument texts for which a bar is worth drawing.
const MIN_TEXTS_FOR_A_BAR: usize = 17;

/// The progress to show: none with `--quiet` or when stderr is not a terminal (a log file, a
/// pipe), none for a few argument texts, a bar for more, a spinner for a stream.
pub(super) fn display(quiet: bool, stderr_is_terminal: bool, total: Total) -> Option<Display> {
    if quiet || !stderr_is_terminal {
        return None;
    }
    match total {
        Total::Known(n) if n >= MIN_TEXTS_FOR_A_BAR => Some(Display::Bar(n)),
        Total::Known(_) => None,
        Total::Unknown => Some(Display::Spinner),
    }
}

/// Progress and warnings on stderr. See the module documentation.
#[derive(Debug)]
pub(super) struct Reporter {
    quiet: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    texts: usize,
    tokens: usize,
}

impl Reporter {
    /// A reporter drawing `display` (nothing when `None`); `quiet` also silences warnings.
    pub(super) fn new(quiet: bool, display: Option<Display>) -> Self {
        let bar = display.map(|d| {
            let (bar, template) = match d {
                Display::Bar(n) => {
                    (ProgressBar::new(n as u64), "{bar:30} {pos}/{len} texts, {msg}, ETA {eta}")
                }
                Display::Spinner => (ProgressBar::new_spinner(), "{spinner} {pos} texts, {msg}"),
            };
            let style =
                ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Reporter { quiet, bar, started: Instant::now(), texts: 0, tokens: 0 }
    }

    /// Counts `texts` more texts of `tokens` tokens done.
    pub(super) fn advance(&mut self, texts: usize, tokens: usize) {
        self.texts += texts;
        self.tokens += tokens;
        if let Some(bar) = &self.bar {
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            let (texts_per_s, tokens_per_s) = (self.texts as f64 / seconds, self.tokens as f64 / seconds);
            bar.set_message(format!("{texts_per_s:.1} texts/s, {tokens_per_s:.0} tokens/s"));
            bar.inc(texts as u64);
        }
    }

    /// One line `stepembed: warning: …` on stderr, unless quiet (the bar is redrawn after it).
    pub(super) fn warn(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let print = || {
            let _ = writeln!(std::io::stderr(), "stepembed: warning: {msg}");
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Removes the bar.
    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_on_a_terminal_without_quiet_and_for_more_than_a_few_texts() {
        assert_eq!(display(false, true, Total::Unknown), Some(Display::Spinner));
        assert_eq!(display(false, true, Total::Known(17)), Some(Display::Bar(17)));
        assert_eq!(display(false, true, Total::Known(16)), None);
        assert_eq!(display(false, true, Total::Known(1)), None);
        for total in [Total::Unknown, Total::Known(1000)] {
            assert_eq!(display(true, true, total), None, "--quiet");
            assert_eq!(display(false, false, total), None, "not a terminal");
        }
    }
}
