//! The error type of every parser in this crate.
//!
//! Every variant names the file it came from and, where the problem sits at a place in
//! the text, the 1-based line; messages say what was expected and what was found.

/// What went wrong while reading or parsing an input file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A gzip-compressed file could not be decompressed.
    #[error("{file}: not a valid gzip stream: {source}")]
    Gzip {
        /// The file.
        file: String,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The text is not valid UTF-8.
    #[error("{file}:{line}: expected UTF-8 text, found the invalid byte 0x{byte:02x}")]
    NotUtf8 {
        /// The file.
        file: String,
        /// Line of the first invalid byte.
        line: usize,
        /// The first invalid byte.
        byte: u8,
    },
    /// The text does not follow the format's grammar.
    #[error("{file}:{line}: expected {expected}, found {found}")]
    Syntax {
        /// The file.
        file: String,
        /// Line where the problem was seen.
        line: usize,
        /// What the grammar expected there.
        expected: String,
        /// What was there instead (shortened).
        found: String,
    },
    /// A field holds a value that cannot be used.
    #[error("{file}:{line}: field {field}: expected {expected}, found {found:?}")]
    InvalidValue {
        /// The file.
        file: String,
        /// Line of the value.
        line: usize,
        /// Field (mmCIF item, column or record name).
        field: String,
        /// What kind of value was expected.
        expected: String,
        /// The value found (shortened).
        found: String,
    },
    /// Something the format requires is absent.
    #[error("{file}:{line}: expected {what}, found none (end of file)")]
    Missing {
        /// The file.
        file: String,
        /// The last line of the file (where it was last looked for).
        line: usize,
        /// What is missing (e.g. "category _atom_site").
        what: String,
    },
}

impl ParseError {
    /// The file this error is about.
    pub fn file(&self) -> &str {
        match self {
            ParseError::Io { file, .. }
            | ParseError::Gzip { file, .. }
            | ParseError::NotUtf8 { file, .. }
            | ParseError::Syntax { file, .. }
            | ParseError::InvalidValue { file, .. }
            | ParseError::Missing { file, .. } => file,
        }
    }

    /// The 1-based line the error points at, where it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Io { .. } | ParseError::Gzip { .. } => None,
            ParseError::NotUtf8 { line, .. }
            | ParseError::Syntax { line, .. }
            | ParseError::InvalidValue { line, .. }
            | ParseError::Missing { line, .. } => Some(*line),
        }
    }
}

/// Result alias of this crate's parsers.
pub type Result<T> = std::result::Result<T, ParseError>;

/// Shortens a piece of offending input for an error message (at most 40 characters,
/// invalid UTF-8 shown lossily).
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX {
        text.push('…');
    }
    text
}

/// The display name of a path in error messages.
pub(crate) fn display_name(path: &std::path::Path) -> String {
    path.display().to_string()
}
