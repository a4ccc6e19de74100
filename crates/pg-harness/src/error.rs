//! The harness's error type.

use std::fmt;
use std::path::PathBuf;

/// Why a PostgreSQL server could not be started or controlled, or why a `psql` run failed. Its
/// `Display` names the server log and shows the end of it, when there is one.
#[derive(Debug)]
pub struct HarnessError {
    message: String,
    log: Option<PathBuf>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HarnessError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        HarnessError {
            message: message.into(),
            log: None,
            source: None,
        }
    }

    pub(crate) fn with_log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The PostgreSQL log file of the failed server, if there is one.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.log.as_deref()
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        if let Some(log) = &self.log {
            write!(
                f,
                "\n--- postgres log: {} (last lines) ---\n",
                log.display()
            )?;
            f.write_str(&crate::process::log_tail(log, 30))?;
        }
        Ok(())
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
