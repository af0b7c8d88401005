//! Progress bars (indicatif) for the CLI's long steps: the downloads of
//! `pate data fetch` (bytes), the cells of `pate experiment run` grids, the
//! teachers a lab or an experiment trains, and the student's epochs.
//!
//! A bar is drawn on stderr only when stderr is a terminal. Otherwise it is
//! hidden and the plain lines are all that is printed, as before, so CI logs
//! hold no control codes. While a bar is up, lines are printed through
//! [`say!`] (stdout) or [`note`] (stderr), which take the bar off the screen,
//! print, and draw it again below: anything printed another way would be
//! drawn over. One bar at a time: a bar asked for while another is up (a
//! lab's teachers inside a grid's cell) stays hidden, and its steps print
//! their plain lines.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar on the screen, if any: what [`say!`] and [`note`] lift.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> MutexGuard<'static, Option<ProgressBar>> {
    // A panic while printing leaves nothing half-done worth refusing over.
    SHOWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `println!` that keeps a bar on the screen intact.
macro_rules! say {
    () => {
        $crate::progress::out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::progress::out(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Prints a line on stdout above the bar (see [`say!`]).
pub fn out(args: fmt::Arguments<'_>) {
    print_above(|| println!("{args}"));
}

/// Prints a line on stderr above the bar.
pub fn note(args: fmt::Arguments<'_>) {
    print_above(|| eprintln!("{args}"));
}

fn print_above(print: impl FnOnce()) {
    // Cloned so that the lock is not held while printing.
    let bar = shown().clone();
    match bar {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

/// A bar on stderr (hidden when stderr is not a terminal, or when another
/// bar is up), taken off the screen when dropped. The flag: this bar is
/// the one up (in `SHOWN`).
pub struct Bar(ProgressBar, bool);

impl Bar {
    fn show(len: Option<u64>, template: &str) -> Bar {
        let mut shown = shown();
        if shown.is_some() {
            return Bar(ProgressBar::hidden(), false);
        }
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(len, target);
        // The templates are constants; a bad one would only lose the style.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        if !bar.is_hidden() {
            // Keeps the elapsed time and the spinner moving through a long step.
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        *shown = Some(bar.clone());
        Bar(bar, true)
    }

    /// `total` steps named `what`: done out of `total`, elapsed and estimated time.
    fn count(total: usize, what: &str) -> Bar {
        let template = format!("{{spinner}} [{{elapsed_precise}}] [{{bar:30}}] {{pos}}/{{len}} {what}, eta {{eta}}  {{wide_msg}}");
        Bar::show(Some(total as u64), &template)
    }

    /// The cells of a grid.
    pub fn cells(total: usize) -> Bar {
        Bar::count(total, "cells")
    }

    /// The teachers being trained.
    pub fn teachers(total: usize) -> Bar {
        Bar::count(total, "teachers trained")
    }

    /// The student's training epochs.
    pub fn epochs(total: usize) -> Bar {
        Bar::count(total, "student epochs")
    }

    /// The bytes of one download of `size` bytes (a byte count when unknown).
    pub fn bytes(file: &str, size: Option<u64>) -> Bar {
        let bar = match size {
            Some(_) => Bar::show(
                size,
                "{msg} [{bar:30}] {bytes}/{total_bytes} at {bytes_per_sec}, eta {eta}",
            ),
            None => Bar::show(None, "{spinner} {msg} {bytes} at {bytes_per_sec}"),
        };
        bar.0.set_message(file.to_string());
        bar
    }

    /// Moves the bar `n` steps on.
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Moves the bar to step `n`.
    pub fn set_position(&self, n: u64) {
        self.0.set_position(n);
    }

    /// One step done, said by `line`: the bar moves on, and the line is
    /// printed (stdout) unless the bar stands for it on a terminal, so that
    /// logs and pipes keep one plain line per step.
    pub fn step(&self, line: fmt::Arguments<'_>) {
        self.0.inc(1);
        if self.wants_lines() {
            out(line);
        }
    }

    /// Whether plain lines must say the progress: the bar is not drawn, or
    /// stdout goes elsewhere than the terminal it is drawn on.
    pub fn wants_lines(&self) -> bool {
        self.0.is_hidden() || !std::io::stdout().is_terminal()
    }

    /// The text after the bar (a cell's name).
    pub fn message(&self, msg: String) {
        self.0.set_message(msg);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        // Only the bar that is up takes itself down (a nested one never was).
        if self.1 {
            *shown() = None;
        }
    }
}

/// The progress of `pate data fetch`: its lines on stderr, a byte bar per download.
#[derive(Default)]
pub struct FetchBars(Option<Bar>);

impl pate_ml::fetch::FetchProgress for FetchBars {
    fn line(&mut self, msg: &str) {
        note(format_args!("{msg}"));
    }

    fn start(&mut self, file: &str, size: Option<u64>) {
        // The previous bar goes first: one bar at a time.
        self.0 = None;
        self.0 = Some(Bar::bytes(file, size));
    }

    fn received(&mut self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    fn done(&mut self) {
        self.0 = None;
    }
}
