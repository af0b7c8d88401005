//! Progress bars (indicatif) for the CLI's long steps: the downloads of
//! `pate data fetch` (bytes) and the cells of `pate experiment run` grids.
//!
//! A bar is drawn on stderr only when stderr is a terminal. Otherwise it is
//! hidden and the plain lines are all that is printed, as before, so CI logs
//! hold no control codes. While a bar is up, lines are printed through
//! [`say!`] (stdout) or [`note`] (stderr), which take the bar off the screen,
//! print, and draw it again below: anything printed another way would be
//! drawn over. One bar at a time.

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

/// A bar on stderr (hidden when stderr is not a terminal), taken off the
/// screen when dropped.
pub struct Bar(ProgressBar);

impl Bar {
    fn show(len: Option<u64>, template: &str) -> Bar {
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
        *shown() = Some(bar.clone());
        Bar(bar)
    }

    /// The cells of a grid: done out of `total`, elapsed and estimated time.
    pub fn cells(total: usize) -> Bar {
        Bar::show(
            Some(total as u64),
            "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} cells, eta {eta}  {wide_msg}",
        )
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

    /// The text after the bar (a cell's name).
    pub fn message(&self, msg: String) {
        self.0.set_message(msg);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        *shown() = None;
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
