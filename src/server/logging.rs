//! The server's log: one line per event on stderr, as text or as JSON.
//!
//! A runtime worker holds its lines until it goes idle or holds [`BATCH_BYTES`]: in a
//! container, stderr is a pipe, and one write per line (each waking the reader) cost the
//! server a fifth of its throughput. Other threads write each line at once.
//!
//! In JSON, the project's own events outside any span (the per-review line among them) are
//! written here, straight into the line: tracing's JSON formatter goes through serde and
//! costs about twice as much per review. Everything else (dependencies' events, `log`
//! records, events inside a span) goes through tracing's formatter, and the tests hold the
//! two to the same bytes.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::io;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs at `RUST_LOG` (default `info`) to stderr, with colors only on a terminal.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(Stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine::new(SystemTime))
            .try_init(),
    };
}

/// Lines a runtime worker holds at most before writing them: about 50 review lines, a
/// millisecond of a busy worker's reviews.
pub const BATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// The lines this thread holds; `None` on threads that write each line at once.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// For the runtime's `on_thread_park`: a worker going idle writes the lines it holds, and
/// holds its lines from then on.
pub fn worker_idle() {
    idle(&mut io::stderr());
}

/// Writes the lines this thread holds (at the end of `serve` and of each worker thread).
pub fn flush() {
    flush_to(&mut io::stderr());
}

// The lines are only ever borrowed for the length of one call here, never across another
// (`try_borrow_mut` all the same: a log must not be able to panic the server).
fn idle(out: &mut dyn io::Write) {
    HELD.with(|held| match held.try_borrow_mut().as_deref_mut() {
        Ok(Some(lines)) => write_out(lines, out),
        Ok(none) => *none = Some(Vec::with_capacity(BATCH_BYTES)),
        Err(_) => {}
    });
}

fn flush_to(out: &mut dyn io::Write) {
    HELD.with(|held| {
        if let Ok(Some(lines)) = held.try_borrow_mut().as_deref_mut() {
            write_out(lines, out);
        }
    });
}

/// Holds `line` if this thread holds its lines (writing them out once they fill a batch);
/// false if the thread writes each line at once.
fn hold(line: &[u8], out: &mut dyn io::Write) -> bool {
    HELD.with(|held| match held.try_borrow_mut().as_deref_mut() {
        Ok(Some(lines)) => {
            lines.extend_from_slice(line);
            if lines.len() >= BATCH_BYTES {
                write_out(lines, out);
            }
            true
        }
        _ => false,
    })
}

fn write_out(lines: &mut Vec<u8>, out: &mut dyn io::Write) {
    if !lines.is_empty() {
        // As tracing's own writer: a log that cannot be written is not an error to report.
        let _ = out.write_all(lines);
        lines.clear();
    }
}

/// stderr, through the thread's held lines when it holds them.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

impl io::Write for Stderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut stderr = io::stderr();
        if !hold(line, &mut stderr) {
            stderr.write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// tracing's JSON line (`flatten_event`: timestamp, level, the event's fields, target),
/// written directly for this crate's events outside spans.
pub struct JsonLine<T> {
    timer: T,
    tracing: Format<Json, T>,
}

impl<T: FormatTime + Clone> JsonLine<T> {
    pub fn new(timer: T) -> Self {
        JsonLine {
            tracing: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_timer(timer.clone()),
            timer,
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // The span lookup as tracing's formatter does it: it lists a span if there is one.
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        if in_span || !meta.target().starts_with(env!("CARGO_CRATE_NAME")) {
            return self.tracing.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        self.timer.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`, the way serde_json writes tracing's fields.
struct Fields<'w, 'a> {
    out: &'w mut Writer<'a>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .out
                .write_char(',')
                .and_then(|()| string(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'))
                .and_then(|()| value(self.out));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(EscapeJson(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    // serde_json's own digits (and `null` for NaN and the infinities).
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| {
            out.write_str(&serde_json::Value::from(value).to_string())
        });
    }
}

/// A JSON string, quoted and escaped.
fn string(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    EscapeJson(out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what passes through it as serde_json does inside a string: `"`, `\`, the short
/// forms `\b \f \n \r \t`, and `\u00XX` for the other control characters.
struct EscapeJson<'a, W: ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for EscapeJson<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (at, byte) in s.bytes().enumerate() {
            let short = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..at])?;
            if short.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(short)?;
            }
            start = at + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::excerpt::Escaped;
    use std::io;
    use std::sync::{Arc, Mutex};

    fn held() -> Option<usize> {
        HELD.with(|held| held.borrow().as_ref().map(Vec::len))
    }

    #[test]
    fn a_worker_holds_its_lines_until_idle_or_a_batch_is_full() {
        std::thread::spawn(|| {
            let line = [b'x'; 100];
            let mut out = Vec::new();
            // Not a worker (yet): each line is written at once.
            assert!(!hold(&line, &mut out));
            assert_eq!(held(), None);
            idle(&mut out);
            assert_eq!(held(), Some(0));
            assert!(hold(&line, &mut out) && hold(&line, &mut out));
            assert_eq!((held(), out.len()), (Some(200), 0));
            idle(&mut out);
            assert_eq!((held(), out.len()), (Some(0), 200));
            out.clear();
            let fit = BATCH_BYTES / line.len();
            for _ in 0..fit {
                hold(&line, &mut out);
            }
            assert_eq!((held(), out.len()), (Some(fit * line.len()), 0));
            hold(&line, &mut out);
            assert_eq!((held(), out.len()), (Some(0), (fit + 1) * line.len()));
            out.clear();
            hold(&line, &mut out);
            flush_to(&mut out);
            assert_eq!((held(), out), (Some(0), line.to_vec()));
        })
        .join()
        .unwrap();
    }

    /// A fixed timestamp, so two formatters' lines can be compared byte for byte.
    #[derive(Clone)]
    struct At(&'static str);

    impl FormatTime for At {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str(self.0)
        }
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Every character from U+0000 to U+00FF, and a few beyond.
    fn every_escape() -> String {
        (0..=0xff_u32)
            .filter_map(char::from_u32)
            .chain("é\u{2028}😀".chars())
            .collect()
    }

    #[derive(Debug)]
    struct Failure;

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a \"quoted\"\nfailure")
        }
    }

    impl std::error::Error for Failure {}

    /// The server's events and one of each kind of field, in and out of a span.
    fn events() {
        let hostile = every_escape();
        tracing::info!(
            uid = %Escaped(&hostile),
            namespace = %Escaped("shop"),
            pod = %Escaped("web-7c9d8f6b5d-"),
            outcome = %"injected",
            reason = %"opted-in",
            profiles = %Escaped("default,debug"),
            duration_us = 55_u64,
            "admission review"
        );
        tracing::warn!(
            outcome = %"error",
            error = %Escaped("the body is not an AdmissionReview: EOF\n"),
            "admission review rejected"
        );
        tracing::info!(
            raw = hostile.as_str(),
            debug = ?hostile,
            yes = true,
            no = false,
            small = -3_i64,
            big = u64::MAX,
            huge = i128::MIN,
            ratio = 1.5_f64,
            tiny = 1e-300_f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            failure = &Failure as &(dyn std::error::Error + 'static),
            "a message with {} and \"quotes\"",
            "arguments"
        );
        tracing::error!("no fields");
        tracing::info!(target: "hyper::proto", peer = "127.0.0.1:1", "not ours");
        let span = tracing::info_span!("conn", peer = %"127.0.0.1:2", id = 7_u64);
        let _entered = span.enter();
        tracing::info!(inner = "x\ny", "in a span");
    }

    fn subscriber<E>(
        lines: &Lines,
        format: E,
    ) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync
    where
        E: for<'a> FormatEvent<tracing_subscriber::Registry, JsonFields> + Send + Sync + 'static,
    {
        let lines = lines.clone();
        tracing_subscriber::fmt()
            .with_writer(move || lines.clone())
            .fmt_fields(JsonFields::new())
            .event_format(format)
            .finish()
    }

    #[test]
    fn json_lines_are_byte_for_byte_tracings_own() {
        let ours = Lines::default();
        let theirs = Lines::default();
        tracing::subscriber::with_default(subscriber(&ours, JsonLine::new(At("T"))), events);
        let reference = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_timer(At("T"));
        tracing::subscriber::with_default(subscriber(&theirs, reference), events);
        let (ours, theirs) = (ours.text(), theirs.text());
        assert_eq!(ours.lines().count(), 6);
        for (a, b) in ours.lines().zip(theirs.lines()) {
            assert_eq!(a, b);
            serde_json::from_str::<serde_json::Value>(a).unwrap();
        }
        assert_eq!(ours, theirs);
    }

    #[test]
    fn only_this_crates_events_outside_spans_take_the_direct_path() {
        // The direct path stamps "direct", tracing's formatter "tracing".
        let lines = Lines::default();
        let format = JsonLine {
            timer: At("direct"),
            tracing: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_timer(At("tracing")),
        };
        tracing::subscriber::with_default(subscriber(&lines, format), events);
        let stamps: Vec<String> = lines
            .text()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"].to_string())
            .collect();
        assert_eq!(
            stamps,
            ["direct", "direct", "direct", "direct", "tracing", "tracing"]
                .map(|s| format!("{s:?}"))
        );
    }
}
