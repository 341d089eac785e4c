//! Errors that say what went wrong, where, and what to do, and the exit code each class maps to.
//!
//! The class decides whether AWS Batch should retry: a configuration or input error will fail the
//! same way again, a transient one (network, throttling, a server error) may not. Messages never
//! carry raw identifiers: callers pass column names, file names and counts, not values.

use std::fmt;

/// What kind of failure, and so which exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A job file, SQL file, table or argument is wrong: fix it, do not retry. Exit 2.
    Config,
    /// Network, storage or platform trouble that may pass: retrying may succeed. Exit 3.
    Transient,
    /// A safety guard stopped the run before anything was sent. Exit 4.
    Guard,
    /// A bug or an unexpected condition. Exit 1.
    Internal,
}

impl ErrorClass {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Internal => 1,
            ErrorClass::Config => 2,
            ErrorClass::Transient => 3,
            ErrorClass::Guard => 4,
        }
    }
}

#[derive(Debug)]
pub struct Error {
    pub class: ErrorClass,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(message: impl Into<String>) -> Error {
        Error {
            class: ErrorClass::Config,
            message: message.into(),
        }
    }

    pub fn transient(message: impl Into<String>) -> Error {
        Error {
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error {
            class: ErrorClass::Internal,
            message: message.into(),
        }
    }

    pub fn guard(message: impl Into<String>) -> Error {
        Error {
            class: ErrorClass::Guard,
            message: message.into(),
        }
    }

    /// Puts `context` in front of the message: `jobs/demo.toml: ...`.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Hides quoted literals (`'jane@example.com'`): errors raised while reading rows, a failed
    /// cast for one, may quote the values they failed on.
    pub fn redacted(mut self) -> Error {
        let mut out = String::with_capacity(self.message.len());
        let mut quoted = false;
        for c in self.message.chars() {
            if c == '\'' {
                if quoted {
                    out.push_str("…'");
                } else {
                    out.push('\'');
                }
                quoted = !quoted;
            } else if !quoted {
                out.push(c);
            }
        }
        self.message = out;
        self
    }

    /// Classifies a DataFusion error: storage and I/O trouble is transient, the rest (planning,
    /// schema, SQL) is the job's to fix.
    pub fn from_datafusion(e: datafusion::error::DataFusionError) -> Error {
        use datafusion::error::DataFusionError as D;
        let root = e.find_root();
        let class = match root {
            D::ObjectStore(os) => object_store_class(os),
            D::IoError(_) | D::External(_) => ErrorClass::Transient,
            D::ResourcesExhausted(_) => ErrorClass::Internal,
            D::Internal(_) => ErrorClass::Internal,
            _ => ErrorClass::Config,
        };
        Error {
            class,
            message: root.to_string(),
        }
    }

    pub fn from_object_store(e: object_store::Error) -> Error {
        Error {
            class: object_store_class(&e),
            message: e.to_string(),
        }
    }
}

fn object_store_class(e: &object_store::Error) -> ErrorClass {
    use object_store::Error as O;
    match e {
        O::NotFound { .. } | O::InvalidPath { .. } | O::NotSupported { .. } => ErrorClass::Config,
        O::PermissionDenied { .. } | O::Unauthenticated { .. } => ErrorClass::Config,
        O::UnknownConfigurationKey { .. } => ErrorClass::Config,
        _ => ErrorClass::Transient,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Error {
        Error::from_datafusion(e)
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Error {
        Error::from_object_store(e)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Error {
        Error::internal(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Error {
        Error::transient(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_quoted_values() {
        let e = Error::config(
            "Cast error: Cannot cast string 'jane@example.com' to value of type Int32",
        )
        .redacted();
        assert_eq!(
            e.message,
            "Cast error: Cannot cast string '…' to value of type Int32"
        );
    }
}
