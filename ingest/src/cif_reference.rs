//! The session-5 CIF tokenizer and parser (one byte at a time), kept only as the reference
//! the fast parser in `cif.rs` is checked against: same documents, same errors.

use super::{Category, CifDocument, DataBlock, Value, ValueKind};
use crate::error::{ParseError, Result, excerpt};
use crate::input::last_line;

/// A lexical token.
#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    Tag(&'a str),
    Value(Value<'a>),
    Loop,
    Data(&'a str),
    Save,
}

/// Byte classes: CIF whitespace.
const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Lookup table for the whitespace test of the hot loops.
static SPACE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = is_space(i as u8);
        i += 1;
    }
    t
};

/// The tokenizer: a cursor over the text with a line counter.
struct Lexer<'a> {
    file: &'a str,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    fn syntax(&self, line: u32, expected: &str, found: &[u8]) -> ParseError {
        ParseError::Syntax {
            file: self.file.to_string(),
            line: line as usize,
            expected: expected.to_string(),
            found: if found.is_empty() {
                "end of file".to_string()
            } else {
                format!("{:?}", excerpt(found))
            },
        }
    }

    /// Skips whitespace and comments; returns false at end of input.
    fn skip_space(&mut self) -> bool {
        let bytes = self.bytes;
        loop {
            while self.pos < bytes.len() && SPACE[bytes[self.pos] as usize] {
                if bytes[self.pos] == b'\n' {
                    self.line += 1;
                }
                self.pos += 1;
            }
            if self.pos >= bytes.len() {
                return false;
            }
            if bytes[self.pos] == b'#' {
                match memchr::memchr(b'\n', &bytes[self.pos..]) {
                    Some(n) => self.pos += n,
                    None => self.pos = bytes.len(),
                }
                continue;
            }
            return true;
        }
    }

    /// End of the bare word starting at `start`.
    fn word_end(&self, start: usize) -> usize {
        let bytes = self.bytes;
        let mut end = start;
        while end < bytes.len() && !SPACE[bytes[end] as usize] {
            end += 1;
        }
        end
    }

    fn next_token(&mut self) -> Result<Option<Token<'a>>> {
        if !self.skip_space() {
            return Ok(None);
        }
        let bytes = self.bytes;
        let start = self.pos;
        let line = self.line;
        let first = bytes[start];
        match first {
            b'_' => {
                let end = self.word_end(start);
                self.pos = end;
                Ok(Some(Token::Tag(&self.text[start..end])))
            }
            b'\'' | b'"' => {
                // A quoted value ends at the quote character followed by whitespace or the
                // end of input; it cannot span lines.
                let mut at = start + 1;
                loop {
                    match memchr::memchr2(first, b'\n', &bytes[at..]) {
                        Some(n) if bytes[at + n] == first => {
                            let close = at + n;
                            if close + 1 >= bytes.len() || SPACE[bytes[close + 1] as usize] {
                                self.pos = close + 1;
                                return Ok(Some(Token::Value(Value {
                                    text: &self.text[start + 1..close],
                                    line,
                                    kind: ValueKind::Quoted,
                                })));
                            }
                            at = close + 1;
                        }
                        _ => {
                            let end = memchr::memchr(b'\n', &bytes[start..])
                                .map_or(bytes.len(), |n| start + n);
                            return Err(self.syntax(
                                line,
                                &format!("a closing {} on the same line", first as char),
                                &bytes[start..end],
                            ));
                        }
                    }
                }
            }
            b';' if start == 0 || bytes[start - 1] == b'\n' => {
                let body = start + 1;
                let mut at = body;
                loop {
                    match memchr::memchr(b'\n', &bytes[at..]) {
                        Some(n) => {
                            let nl = at + n;
                            if bytes.get(nl + 1) == Some(&b';') {
                                self.line +=
                                    memchr::memchr_iter(b'\n', &bytes[start..=nl]).count() as u32;
                                self.pos = nl + 2;
                                let mut end = nl;
                                if end > body && bytes[end - 1] == b'\r' {
                                    end -= 1;
                                }
                                return Ok(Some(Token::Value(Value {
                                    text: &self.text[body..end.max(body)],
                                    line,
                                    kind: ValueKind::TextField,
                                })));
                            }
                            at = nl + 1;
                        }
                        None => {
                            return Err(self.syntax(
                                line,
                                "a line starting with ';' closing the text field",
                                &[],
                            ));
                        }
                    }
                }
            }
            _ => {
                let end = self.word_end(start);
                self.pos = end;
                let word = &self.text[start..end];
                let token = match word.as_bytes() {
                    [b'.'] => Token::Value(Value {
                        text: word,
                        line,
                        kind: ValueKind::Inapplicable,
                    }),
                    [b'?'] => Token::Value(Value {
                        text: word,
                        line,
                        kind: ValueKind::Unknown,
                    }),
                    w if w.len() >= 5 && w[4] == b'_' => {
                        let head = &w[..5];
                        if head.eq_ignore_ascii_case(b"data_") {
                            Token::Data(&word[5..])
                        } else if head.eq_ignore_ascii_case(b"save_") {
                            Token::Save
                        } else if w.eq_ignore_ascii_case(b"loop_") {
                            Token::Loop
                        } else if w.eq_ignore_ascii_case(b"stop_") {
                            return Err(self.syntax(line, "a value or tag (stop_ is reserved)", w));
                        } else {
                            Token::Value(plain(word, line))
                        }
                    }
                    w if w.len() >= 7 && w[..7].eq_ignore_ascii_case(b"global_") => {
                        return Err(self.syntax(line, "a value or tag (global_ is reserved)", w));
                    }
                    _ => Token::Value(plain(word, line)),
                };
                Ok(Some(token))
            }
        }
    }
}

fn plain(text: &str, line: u32) -> Value<'_> {
    Value {
        text,
        line,
        kind: ValueKind::Plain,
    }
}

/// Splits `_category.item` into (`_category`, `item`); a tag without a dot is a
/// category of its own with an empty item name.
fn split_tag(tag: &str) -> (&str, &str) {
    match tag.find('.') {
        Some(dot) => (&tag[..dot], &tag[dot + 1..]),
        None => (tag, ""),
    }
}

/// Parses CIF text. `file` names the input in errors.
pub(super) fn parse<'a>(file: &'a str, text: &'a str) -> Result<CifDocument<'a>> {
    let mut lexer = Lexer {
        file,
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    let mut blocks: Vec<DataBlock<'a>> = Vec::new();
    let mut pending: Option<Token<'a>> = None;
    loop {
        let token = match pending.take() {
            Some(t) => t,
            None => match lexer.next_token()? {
                Some(t) => t,
                None => break,
            },
        };
        let line = lexer.line;
        match token {
            Token::Data(name) => blocks.push(DataBlock {
                name,
                line,
                categories: Vec::new(),
            }),
            Token::Save => {}
            Token::Value(v) => {
                return Err(lexer.syntax(v.line, "a tag, loop_ or data_", v.text.as_bytes()));
            }
            Token::Tag(tag) => {
                let Some(block) = blocks.last_mut() else {
                    return Err(lexer.syntax(line, "a data_ block header", tag.as_bytes()));
                };
                let value = match lexer.next_token()? {
                    Some(Token::Value(v)) => v,
                    other => {
                        let found = token_text(other);
                        return Err(lexer.syntax(
                            lexer.line,
                            &format!("a value for {tag}"),
                            found.as_bytes(),
                        ));
                    }
                };
                let (category, item) = split_tag(tag);
                match block.categories.last_mut() {
                    Some(last) if !last.is_loop && last.name.eq_ignore_ascii_case(category) => {
                        last.items.push(item);
                        last.values.push(value);
                    }
                    _ => block.categories.push(Category {
                        name: category,
                        items: vec![item],
                        values: vec![value],
                        line,
                        is_loop: false,
                    }),
                }
            }
            Token::Loop => {
                let loop_line = line;
                let Some(block) = blocks.last_mut() else {
                    return Err(lexer.syntax(line, "a data_ block header", b"loop_"));
                };
                let mut items = Vec::new();
                let mut category_name: Option<&'a str> = None;
                let mut values = Vec::new();
                loop {
                    match lexer.next_token()? {
                        Some(Token::Tag(tag)) if values.is_empty() => {
                            let (category, item) = split_tag(tag);
                            match category_name {
                                None => category_name = Some(category),
                                Some(c) if c.eq_ignore_ascii_case(category) => {}
                                Some(c) => {
                                    return Err(lexer.syntax(
                                        lexer.line,
                                        &format!("a tag of category {c} in this loop"),
                                        tag.as_bytes(),
                                    ));
                                }
                            }
                            items.push(item);
                        }
                        Some(Token::Value(v)) if !items.is_empty() => values.push(v),
                        other => {
                            pending = other;
                            break;
                        }
                    }
                }
                let Some(name) = category_name else {
                    let found = token_text(pending);
                    return Err(lexer.syntax(loop_line, "a tag after loop_", found.as_bytes()));
                };
                if values.len() % items.len() != 0 {
                    return Err(ParseError::Syntax {
                        file: file.to_string(),
                        line: loop_line as usize,
                        expected: format!(
                            "a multiple of {} values in the loop of {name}",
                            items.len()
                        ),
                        found: format!("{} values", values.len()),
                    });
                }
                block.categories.push(Category {
                    name,
                    items,
                    values,
                    line: loop_line,
                    is_loop: true,
                });
            }
        }
    }
    if blocks.is_empty() {
        return Err(ParseError::Missing {
            file: file.to_string(),
            line: last_line(text.as_bytes()),
            what: "a data_ block".to_string(),
        });
    }
    Ok(CifDocument { blocks })
}

fn token_text(token: Option<Token<'_>>) -> String {
    match token {
        None => String::new(),
        Some(Token::Tag(t)) => t.to_string(),
        Some(Token::Value(v)) => v.text.to_string(),
        Some(Token::Loop) => "loop_".to_string(),
        Some(Token::Data(n)) => format!("data_{n}"),
        Some(Token::Save) => "save_".to_string(),
    }
}
