//! Reading input files: whole-file reads, transparent gzip, UTF-8 validation.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use crate::error::{ParseError, Result, display_name};

/// The two magic bytes that open every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file; a gzip-compressed file (recognised by its magic bytes, whatever
/// its name) is decompressed. Returns the display name used in errors and the bytes.
pub fn read_file(path: &Path) -> Result<(String, Vec<u8>)> {
    let name = display_name(path);
    let raw = std::fs::read(path).map_err(|source| ParseError::Io {
        file: name.clone(),
        source,
    })?;
    let bytes = decompress_if_gzip(&name, raw)?;
    Ok((name, bytes))
}

/// Decompresses `raw` when it starts with the gzip magic bytes; returns it unchanged otherwise.
pub fn decompress_if_gzip(file: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    gunzip(file, &raw)
}

/// [`decompress_if_gzip`] on borrowed bytes: plain bytes are returned borrowed, not
/// copied (the ingest job holds fetched files as shared buffers).
pub fn decompress_if_gzip_borrowed<'a>(file: &str, raw: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(raw));
    }
    gunzip(file, raw).map(Cow::Owned)
}

/// Decompresses a (possibly multi-member) gzip stream.
fn gunzip(file: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|source| ParseError::Gzip {
            file: file.to_string(),
            source,
        })?;
    Ok(out)
}

/// Checks that `bytes` is UTF-8 and returns it as text; the error names the line of the
/// first invalid byte.
pub fn as_utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        ParseError::NotUtf8 {
            file: file.to_string(),
            line: line_of(bytes, at),
            byte: bytes[at],
        }
    })
}

/// 1-based line number of byte offset `offset` in `bytes`.
pub fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + memchr::memchr_iter(b'\n', &bytes[..offset.min(bytes.len())]).count()
}

/// Number of lines of `bytes` (the line an end-of-file error points at).
pub fn last_line(bytes: &[u8]) -> usize {
    line_of(bytes, bytes.len()).max(1)
}
