//! [`Report`]: an error type for `main` that prints sentences, not structs,
//! and the error of every message handler.
//!
//! A `main` that returns `Result<(), Box<dyn Error>>` prints its error with
//! `Debug`, so a user sees `Error: Inequivalent { object: "queue", ... }`.
//! Returning `Result<(), Report>` prints the error's `Display` instead,
//! followed by the chain of its causes:
//!
//! ```text
//! Error: queue 'hello' exists with x-queue-type = quorum; this program asked for classic
//! ```

use std::error::Error;
use std::fmt;

/// Any error, shown as a sentence and its causes when `main` returns it.
///
/// Every error converts into it with `?`, so the tutorial programs write:
///
/// ```no_run
/// use rabbitkit::{Options, Queue, Report};
///
/// #[tokio::main]
/// async fn main() -> Result<(), Report> {
///     let client = Options::new().connect_env().await?;
///     Queue::named("hello").declare(&client).await?;
///     Ok(())
/// }
/// ```
///
/// Its `Debug` (what `main` prints) and `Display` both give the error's
/// message; `Debug` adds one `caused by:` line per source.
///
/// # The error of a handler
///
/// Every handler (`Subscription::handle*`, `WorkQueue::work*`, `Router`,
/// `PartitionedQueue::work*`) returns `Result<(), Report>`, so a closure's
/// `Ok(())` needs no annotation and `?` takes any error (`String` and
/// `&str` too, with `.into()`):
///
/// ```no_run
/// # async fn run(tasks: rabbitkit::WorkQueue<String>) -> Result<(), rabbitkit::Report> {
/// tasks
///     .work(|task: String| async move {
///         let n: u32 = task.trim().parse()?; // a ParseIntError becomes a Report
///         if n == 0 {
///             return Err("zero is not a task".into());
///         }
///         Ok(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
///
/// A handler with an error type of its own keeps it: the `Report` holds
/// the error itself (see [`inner`](Self::inner)), and `err_into` (from
/// `futures::TryFutureExt`) or `?` converts it where the handler is given:
///
/// ```no_run
/// # async fn run(tasks: rabbitkit::WorkQueue<String>) -> Result<(), rabbitkit::Report> {
/// use futures::TryFutureExt;
///
/// #[derive(Debug)]
/// struct OutOfStock(String);
/// impl std::fmt::Display for OutOfStock {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{} is out of stock", self.0)
///     }
/// }
/// impl std::error::Error for OutOfStock {}
///
/// async fn reserve(item: String) -> Result<(), OutOfStock> {
///     Err(OutOfStock(item))
/// }
///
/// tasks.work(|item: String| reserve(item).err_into()).await?;
/// # Ok(()) }
/// ```
///
/// An error of another type is not turned into a `Report` behind your
/// back; it needs `?`, `.into()` or `err_into`:
///
/// ```compile_fail,E0271
/// # async fn run(tasks: rabbitkit::WorkQueue<String>) {
/// tasks.work(|task: String| async move { Err::<(), String>(task) }).await;
/// # }
/// ```
pub struct Report(Box<dyn Error + Send + Sync + 'static>);

impl Report {
    /// The error inside.
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }

    /// Takes the error out.
    pub fn into_inner(self) -> Box<dyn Error + Send + Sync + 'static> {
        self.0
    }

    /// The error and its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn Error + 'static)> {
        let first: &(dyn Error + 'static) = &*self.0;
        std::iter::successors(Some(first), |e: &&(dyn Error + 'static)| (*e).source())
    }
}

impl<E> From<E> for Report
where
    E: Into<Box<dyn Error + Send + Sync + 'static>>,
{
    fn from(error: E) -> Self {
        Report(error.into())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut last = self.0.to_string();
        for cause in self.chain().skip(1) {
            let text = cause.to_string();
            // Many errors repeat their cause's text in their own message.
            if !last.contains(&text) {
                write!(f, "\n  caused by: {text}")?;
            }
            last = text;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not read the settings")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn debug_is_the_message_and_its_causes_not_a_struct() {
        let report = Report::from(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(
            format!("{report:?}"),
            "could not read the settings\n  caused by: disk on fire"
        );
        assert_eq!(report.to_string(), "could not read the settings");
        assert_eq!(report.chain().count(), 2);
    }

    #[test]
    fn strings_and_boxed_errors_convert() {
        let from_str = Report::from("no such severity");
        assert_eq!(format!("{from_str:?}"), "no such severity");
        let boxed: Box<dyn Error + Send + Sync> = "boxed".into();
        assert_eq!(Report::from(boxed).to_string(), "boxed");
    }

    #[test]
    fn a_cause_repeated_in_the_message_is_not_printed_twice() {
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl fmt::Display for Repeats {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "connect failed: {}", self.0)
            }
        }
        impl Error for Repeats {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let report = Report::from(Repeats(std::io::Error::other("refused")));
        assert_eq!(format!("{report:?}"), "connect failed: refused");
    }
}
