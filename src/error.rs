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

    /// An error raised while the segment's rows are read. Its text is chosen here, not taken
    /// from the error and filtered: what DataFusion and arrow say at that point may quote the
    /// values they failed on (a failed cast, `make_date`, a CSV line, `Row data: '[...]'`), and
    /// no quoting rule can tell a value from the text around it (`o'brien@...`, a value over
    /// several lines). So it keeps the error's kind, and text only where the error is about
    /// files or resources rather than values.
    pub fn while_reading_rows(e: datafusion::error::DataFusionError) -> Error {
        use datafusion::error::DataFusionError as D;
        let root = e.find_root();
        // Storage trouble wrapped where DataFusion does not look (a Parquet reader's
        // `External(object_store::Error)`): its class decides whether a retry may help.
        if let Some(cause) = storage_cause(root) {
            return cause;
        }
        let hidden = "its text is not shown, as it may quote the segment's values; reproduce it on a copy of the \
                      data without PII, or check the column types the SQL uses";
        let (class, message) = match root {
            // Paths, buckets and HTTP statuses: nothing of a row.
            D::ObjectStore(os) => (object_store_class(os), os.to_string()),
            D::IoError(io) => (
                ErrorClass::Transient,
                format!("an I/O error while reading the tables: {}", io.kind()),
            ),
            // Its text names operators and byte counts, never values.
            D::ResourcesExhausted(what) => (
                ErrorClass::Config,
                format!(
                    "the query needed more memory than its share of the run's budget, even spilling to TMPDIR ({what}); \
                     raise ACTIVATOR_MEMORY_LIMIT (or the job definition's memory), give TMPDIR room, or narrow the segment"
                ),
            ),
            D::ArrowError(a, _) => (
                ErrorClass::Config,
                format!(
                    "a value could not be converted ({}); {hidden}",
                    arrow_kind(a)
                ),
            ),
            D::ParquetError(_) => (
                ErrorClass::Config,
                format!("a Parquet file of a table could not be read; {hidden}"),
            ),
            D::Execution(_) | D::Plan(_) | D::SQL(..) | D::SchemaError(..) => (
                ErrorClass::Config,
                format!("the segment failed on its rows; {hidden}"),
            ),
            // Errors of other libraries DataFusion calls (readers, object stores): as likely to
            // pass as not, so retried.
            D::External(_) => (
                ErrorClass::Transient,
                format!("the query failed while reading rows; {hidden}"),
            ),
            _ => (
                ErrorClass::Internal,
                format!("the query failed while reading rows; {hidden}"),
            ),
        };
        Error { class, message }
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

/// An object store or I/O error in an error's source chain, classed (its text names paths and
/// statuses, never values).
fn storage_cause(e: &(dyn std::error::Error + 'static)) -> Option<Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(os) = err.downcast_ref::<object_store::Error>() {
            return Some(Error {
                class: object_store_class(os),
                message: os.to_string(),
            });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(Error::transient(format!(
                "an I/O error while reading the tables: {}",
                io.kind()
            )));
        }
        next = err.source();
    }
    None
}

/// The kind of an arrow error, without its text.
fn arrow_kind(e: &arrow::error::ArrowError) -> &'static str {
    use arrow::error::ArrowError as A;
    match e {
        A::CastError(_) => "a cast",
        A::ParseError(_) => "parsing",
        A::CsvError(_) => "reading CSV",
        A::JsonError(_) => "reading JSON",
        A::ComputeError(_) => "a computation",
        A::ArithmeticOverflow(_) | A::DivideByZero => "arithmetic",
        A::InvalidArgumentError(_) => "an invalid argument",
        _ => "arrow",
    }
}

/// Permission, not-found and configuration errors fail the same way again (exit 2); the rest of
/// an object store's errors (network, throttling, server errors) may pass (exit 3).
pub fn object_store_class(e: &object_store::Error) -> ErrorClass {
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
    fn errors_while_reading_rows_show_no_value() {
        use datafusion::error::DataFusionError as D;
        for value in [
            "o'brien@example.com",
            "\"quoted\" jane@example.com",
            "line one\nline 'two'",
        ] {
            let errors = [
                D::ArrowError(
                    Box::new(arrow::error::ArrowError::CastError(format!(
                        "Cannot cast string '{value}' to value of type Int32"
                    ))),
                    None,
                ),
                D::Execution(format!("Row data: '[{value}, 1]'")),
                D::Execution(format!("Unable to parse date from {value}")),
                D::External(format!("csv: {value}").into()),
            ];
            for e in errors {
                let e = Error::while_reading_rows(e);
                for part in value
                    .split(['\'', '"', '\n', ' ', '@'])
                    .filter(|p| p.len() > 2)
                {
                    assert!(!e.message.contains(part), "{part} in {}", e.message);
                }
            }
        }
        // An S3 error wrapped inside a Parquet error is storage trouble: retried, its text shown.
        let wrapped = D::ParquetError(Box::new(parquet::errors::ParquetError::External(Box::new(
            object_store::Error::Generic {
                store: "S3",
                source: "503 Slow Down".into(),
            },
        ))));
        let e = Error::while_reading_rows(wrapped);
        assert_eq!(e.class, ErrorClass::Transient, "{}", e.message);
        assert!(e.message.contains("503"), "{}", e.message);
        let cast = Error::while_reading_rows(D::ArrowError(
            Box::new(arrow::error::ArrowError::CastError("x".into())),
            None,
        ));
        assert!(
            cast.message.contains("a cast") && cast.class == ErrorClass::Config,
            "{}",
            cast.message
        );
    }
}
