//! A CIF 1.1 tokenizer and parser over a text buffer that borrows every value from it.
//!
//! It understands data blocks, save frames (their items join the enclosing block),
//! categories of `_category.item value` pairs, `loop_` tables, single- and double-quoted
//! values, `;` text fields, the null values `.` (inapplicable) and `?` (unknown), and
//! comments. Values are slices of the input: parsing allocates one vector per category,
//! never one per value. Tags are matched case-insensitively, as CIF requires.
//!
//! Speed: whitespace is classified 64 bytes at a time into bit masks (a `Window`), so a
//! run of spaces or a word costs a shift and a `trailing_zeros` rather than a branch per
//! byte, and bare loop values go straight into their category. [`parse_selected`] checks
//! the whole text but stores only the categories and items a reader asks for. The
//! byte-at-a-time parser this replaced is kept as a test reference (`cif_reference.rs`):
//! both must give the same document or the same error on any input.

use crate::error::{ParseError, Result, excerpt};
use crate::input::last_line;

/// How a value was written; tells the nulls `.` and `?` apart from quoted `'.'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A bare word.
    Plain,
    /// A single- or double-quoted string (quotes removed).
    Quoted,
    /// A `;` text field (delimiters and the final newline removed).
    TextField,
    /// The bare `.`: the item does not apply.
    Inapplicable,
    /// The bare `?`: the value is unknown.
    Unknown,
}

/// One value of a CIF file, borrowed from the input text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    /// The text of the value, without quotes or text-field delimiters.
    pub text: &'a str,
    /// 1-based line where the value starts.
    pub line: u32,
    /// How it was written.
    pub kind: ValueKind,
}

impl<'a> Value<'a> {
    /// True for the nulls `.` and `?`.
    pub fn is_null(&self) -> bool {
        matches!(self.kind, ValueKind::Inapplicable | ValueKind::Unknown)
    }

    /// The text, or `None` for the nulls `.` and `?`.
    pub fn as_str(&self) -> Option<&'a str> {
        (!self.is_null()).then_some(self.text)
    }
}

/// A category: the items of one `_category.` prefix, as a table of rows.
///
/// Invariant: `values.len()` is a multiple of `items.len()` (row-major storage).
#[derive(Debug, Clone, PartialEq)]
pub struct Category<'a> {
    /// Category name including the leading underscore, e.g. `_atom_site`.
    pub name: &'a str,
    /// Item names after the dot, e.g. `Cartn_x`.
    pub items: Vec<&'a str>,
    /// Values in row-major order.
    pub values: Vec<Value<'a>>,
    /// Line of the first tag of the category.
    pub line: u32,
    /// Whether the category was written as a `loop_`.
    pub is_loop: bool,
}

impl<'a> Category<'a> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.items.len()).unwrap_or(0)
    }

    /// Index of an item (case-insensitive).
    pub fn item_index(&self, item: &str) -> Option<usize> {
        self.items.iter().position(|i| i.eq_ignore_ascii_case(item))
    }

    /// The column of an item, if the category has it.
    pub fn column(&self, item: &str) -> Option<Column<'_, 'a>> {
        self.item_index(item).map(|index| Column {
            values: &self.values,
            index,
            stride: self.items.len(),
        })
    }

    /// The value of an item in row `row`.
    pub fn value(&self, row: usize, item: &str) -> Option<Value<'a>> {
        self.column(item).and_then(|c| c.get(row))
    }
}

/// One column of a category: a strided view of its values.
#[derive(Debug, Clone, Copy)]
pub struct Column<'c, 'a> {
    values: &'c [Value<'a>],
    index: usize,
    stride: usize,
}

impl<'c, 'a> Column<'c, 'a> {
    /// The value in row `row`.
    pub fn get(&self, row: usize) -> Option<Value<'a>> {
        self.values.get(row * self.stride + self.index).copied()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.stride).unwrap_or(0)
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, top to bottom.
    pub fn iter(&self) -> impl Iterator<Item = Value<'a>> + 'c {
        // An empty loop (items but no rows) has fewer values than `index`.
        self.values
            .get(self.index..)
            .unwrap_or_default()
            .iter()
            .step_by(self.stride.max(1))
            .copied()
    }
}

/// A `data_` block: its name and categories in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct DataBlock<'a> {
    /// Block name after `data_`.
    pub name: &'a str,
    /// Line of the `data_` header.
    pub line: u32,
    /// Categories in file order.
    pub categories: Vec<Category<'a>>,
}

impl<'a> DataBlock<'a> {
    /// The first category with this name (with its leading underscore, case-insensitive).
    pub fn category(&self, name: &str) -> Option<&Category<'a>> {
        self.categories
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// A parsed CIF file: its data blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct CifDocument<'a> {
    /// Data blocks in file order.
    pub blocks: Vec<DataBlock<'a>>,
}

/// What [`parse_selected`] keeps of a category. Syntax is checked everywhere either way;
/// a category keeps its place in the block (so lookups by name see the same first
/// category), only its dropped items and their values are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep<'s> {
    /// Every item and value.
    All,
    /// Only these items (matched case-insensitively) and their values.
    Items(&'s [&'s str]),
}

impl Keep<'_> {
    fn keeps(&self, item: &str) -> bool {
        match self {
            Keep::All => true,
            Keep::Items(items) => items.iter().any(|i| i.eq_ignore_ascii_case(item)),
        }
    }
}

/// A lexical token.
#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    Tag(&'a str),
    Value(Value<'a>),
    Loop,
    Data(&'a str),
    Save,
}

/// CIF whitespace.
const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The whitespace and newline bytes of a 64-byte window of the input, as bit masks (bit
/// `i` is byte `start + i`). Bytes past the end of the input count as whitespace, so a
/// word at the end of the input ends there.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: usize,
    space: u64,
    newline: u64,
}

/// Low seven bits of every byte of a word.
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// High bit of every byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `word` equal to `byte`, exactly (no carries cross bytes:
/// each lane adds at most 0x7f + 0x7f).
const fn bytes_equal(word: u64, byte: u8) -> u64 {
    let diff = word ^ (byte as u64 * 0x0101_0101_0101_0101);
    !(((diff & LOW7) + LOW7) | diff) & HIGH
}

/// Packs the high bits of the eight bytes of a word into the low eight bits.
const fn high_bits(mask: u64) -> u64 {
    ((mask >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

impl Window {
    /// Classifies the 64 bytes from `start`.
    #[inline(never)]
    fn at(bytes: &[u8], start: usize) -> Window {
        let mut padded = [b' '; 64];
        let block: &[u8; 64] = match bytes.get(start..).and_then(|b| b.first_chunk()) {
            Some(block) => block,
            None => {
                let tail = bytes.get(start..).unwrap_or_default();
                padded[..tail.len()].copy_from_slice(tail);
                &padded
            }
        };
        let (space, newline) = classify(block);
        Window {
            start,
            space,
            newline,
        }
    }
}

/// Whitespace and newline masks of 64 bytes: SSE2 compares (part of every x86-64 CPU),
/// 16 bytes at a time; four times fewer instructions than [`classify_words`].
#[cfg(target_arch = "x86_64")]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    // SAFETY: SSE2 is in the x86-64 baseline, so every x86-64 CPU runs this function; it
    // touches no memory but its argument's bytes (read as integers, no pointers).
    unsafe { classify_sse2(block) }
}

/// Whitespace and newline masks of 64 bytes.
#[cfg(not(target_arch = "x86_64"))]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    classify_words(block)
}

/// [`classify`] with SSE2 byte compares.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn classify_sse2(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8,
    };
    let (mut space, mut newline) = (0u64, 0u64);
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        let mut low = [0u8; 8];
        let mut high = [0u8; 8];
        low.copy_from_slice(&chunk[..8]);
        high.copy_from_slice(&chunk[8..]);
        let v = _mm_set_epi64x(i64::from_le_bytes(high), i64::from_le_bytes(low));
        let equal = |byte: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8));
        let nl = equal(b'\n');
        let sp = _mm_or_si128(
            _mm_or_si128(nl, equal(b' ')),
            _mm_or_si128(equal(b'\t'), equal(b'\r')),
        );
        // movemask yields 16 bits (zero-extended), one per byte.
        space |= (_mm_movemask_epi8(sp) as u32 as u64) << (16 * k);
        newline |= (_mm_movemask_epi8(nl) as u32 as u64) << (16 * k);
    }
    (space, newline)
}

/// [`classify`] in plain integer arithmetic, eight bytes at a time (the portable form,
/// and the reference the SSE2 form is tested against).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_words(block: &[u8; 64]) -> (u64, u64) {
    let (mut space, mut newline) = (0u64, 0u64);
    for (k, chunk) in block.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let nl = bytes_equal(word, b'\n');
        let sp = nl | bytes_equal(word, b' ') | bytes_equal(word, b'\t') | bytes_equal(word, b'\r');
        space |= high_bits(sp) << (8 * k);
        newline |= high_bits(nl) << (8 * k);
    }
    (space, newline)
}

/// Bits below bit `n` (`n < 64`).
const fn below(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// The tokenizer: a cursor over the text with a line counter. Whitespace is found through
/// the bit masks of a [`Window`], so runs of spaces and words cost a few instructions
/// each rather than a branch per byte.
struct Lexer<'a> {
    file: &'a str,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: u32,
    window: Window,
}

impl<'a> Lexer<'a> {
    fn new(file: &'a str, text: &'a str) -> Self {
        Lexer {
            file,
            text,
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
            window: Window::at(text.as_bytes(), 0),
        }
    }

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

    /// The window holding byte `at` (classified anew when `at` is outside the current
    /// one), and `at`'s bit offset in it.
    #[inline(always)]
    fn window_at(&mut self, at: usize) -> (Window, u32) {
        let offset = at.wrapping_sub(self.window.start);
        if offset >= 64 {
            self.window = Window::at(self.bytes, at);
            return (self.window, 0);
        }
        (self.window, offset as u32)
    }

    /// Skips whitespace and comments, counting lines; returns false at end of input.
    #[inline(always)]
    fn skip_space(&mut self) -> bool {
        let len = self.bytes.len();
        loop {
            loop {
                if self.pos >= len {
                    return false;
                }
                let (window, offset) = self.window_at(self.pos);
                let ahead = !window.space >> offset;
                let newlines = window.newline >> offset;
                if ahead != 0 {
                    let run = ahead.trailing_zeros();
                    // Most runs are one space between values of a line: no newline.
                    let crossed = newlines & below(run);
                    if crossed != 0 {
                        self.line += crossed.count_ones();
                    }
                    self.pos += run as usize;
                    break;
                }
                self.line += newlines.count_ones();
                self.pos = window.start + 64;
            }
            // Padding past the end is whitespace, so a token starts inside the input.
            if self.bytes[self.pos] == b'#' {
                match memchr::memchr(b'\n', &self.bytes[self.pos..]) {
                    Some(n) => self.pos += n,
                    None => self.pos = len,
                }
                continue;
            }
            return true;
        }
    }

    /// End of the bare word starting at `start` (the next whitespace or the end of input).
    #[inline(always)]
    fn word_end(&mut self, start: usize) -> usize {
        let len = self.bytes.len();
        let mut at = start;
        while at < len {
            let (window, offset) = self.window_at(at);
            let spaces = window.space >> offset;
            if spaces != 0 {
                return (at + spaces.trailing_zeros() as usize).min(len);
            }
            at = window.start + 64;
        }
        len
    }

    #[inline(always)]
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
            b'\'' | b'"' => self.quoted(start, line).map(Some),
            b';' if start == 0 || bytes[start - 1] == b'\n' => {
                self.text_field(start, line).map(Some)
            }
            _ => {
                let end = self.word_end(start);
                self.pos = end;
                let word = &self.text[start..end];
                let w = word.as_bytes();
                let token = match bare_word_kind(w) {
                    Some(kind) => Token::Value(Value {
                        text: word,
                        line,
                        kind,
                    }),
                    None if w[4] == b'_' && w[..5].eq_ignore_ascii_case(b"data_") => {
                        Token::Data(&word[5..])
                    }
                    None if w[4] == b'_' && w[..5].eq_ignore_ascii_case(b"save_") => Token::Save,
                    None if w.eq_ignore_ascii_case(b"loop_") => Token::Loop,
                    None if w.eq_ignore_ascii_case(b"stop_") => {
                        return Err(self.syntax(line, "a value or tag (stop_ is reserved)", w));
                    }
                    None => {
                        return Err(self.syntax(line, "a value or tag (global_ is reserved)", w));
                    }
                };
                Ok(Some(token))
            }
        }
    }

    /// The next token when it is a bare-word value (the common case inside loops), read
    /// without building a [`Token`]; `None` (nothing consumed but whitespace and comments)
    /// for anything else, which [`Lexer::next_token`] then reads.
    #[inline(always)]
    fn bare_value(&mut self) -> Option<Value<'a>> {
        if !self.skip_space() {
            return None;
        }
        let start = self.pos;
        if matches!(self.bytes[start], b'_' | b'\'' | b'"' | b';') {
            return None;
        }
        let end = self.word_end(start);
        let kind = bare_word_kind(&self.bytes[start..end])?;
        self.pos = end;
        Some(Value {
            text: &self.text[start..end],
            line: self.line,
            kind,
        })
    }

    /// A quoted value starting at `start`: it ends at the quote character followed by
    /// whitespace or the end of input, and cannot span lines.
    #[inline(never)]
    fn quoted(&mut self, start: usize, line: u32) -> Result<Token<'a>> {
        let bytes = self.bytes;
        let quote = bytes[start];
        let mut at = start + 1;
        loop {
            match memchr::memchr2(quote, b'\n', &bytes[at..]) {
                Some(n) if bytes[at + n] == quote => {
                    let close = at + n;
                    if close + 1 >= bytes.len() || is_space(bytes[close + 1]) {
                        self.pos = close + 1;
                        return Ok(Token::Value(Value {
                            text: &self.text[start + 1..close],
                            line,
                            kind: ValueKind::Quoted,
                        }));
                    }
                    at = close + 1;
                }
                _ => {
                    let end =
                        memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |n| start + n);
                    return Err(self.syntax(
                        line,
                        &format!("a closing {} on the same line", quote as char),
                        &bytes[start..end],
                    ));
                }
            }
        }
    }

    /// A `;` text field starting at `start` (a `;` at the start of a line): it ends at the
    /// next line that starts with `;`.
    #[inline(never)]
    fn text_field(&mut self, start: usize, line: u32) -> Result<Token<'a>> {
        let bytes = self.bytes;
        let body = start + 1;
        let mut at = body;
        loop {
            let Some(n) = memchr::memchr(b'\n', &bytes[at..]) else {
                return Err(self.syntax(
                    line,
                    "a line starting with ';' closing the text field",
                    &[],
                ));
            };
            let nl = at + n;
            if bytes.get(nl + 1) == Some(&b';') {
                self.line += memchr::memchr_iter(b'\n', &bytes[start..=nl]).count() as u32;
                self.pos = nl + 2;
                let mut end = nl;
                if end > body && bytes[end - 1] == b'\r' {
                    end -= 1;
                }
                return Ok(Token::Value(Value {
                    text: &self.text[body..end.max(body)],
                    line,
                    kind: ValueKind::TextField,
                }));
            }
            at = nl + 1;
        }
    }
}

/// The kind of value a bare word is, or `None` for the reserved words (`data_…`,
/// `save_…`, `loop_`, `stop_`, `global_…`; case-insensitive). A reserved word is at least
/// five bytes long, with `_` at index 4 unless it starts with `global_`.
#[inline(always)]
fn bare_word_kind(word: &[u8]) -> Option<ValueKind> {
    match word {
        [b'.'] => Some(ValueKind::Inapplicable),
        [b'?'] => Some(ValueKind::Unknown),
        w if w.len() >= 5 && w[4] == b'_' => {
            let head = &w[..5];
            let reserved = head.eq_ignore_ascii_case(b"data_")
                || head.eq_ignore_ascii_case(b"save_")
                || w.eq_ignore_ascii_case(b"loop_")
                || w.eq_ignore_ascii_case(b"stop_");
            (!reserved).then_some(ValueKind::Plain)
        }
        w if w.len() >= 7 && w[..7].eq_ignore_ascii_case(b"global_") => None,
        _ => Some(ValueKind::Plain),
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

/// Parses CIF text, keeping every category and value. `file` names the input in errors.
pub fn parse<'a>(file: &'a str, text: &'a str) -> Result<CifDocument<'a>> {
    parse_selected(file, text, |_| Keep::All)
}

/// Parses CIF text, keeping of each category (by its name with the leading underscore)
/// what `select` says. The whole text is checked as [`parse`] checks it (same errors);
/// the document equals [`parse`]'s with the dropped items and values left out. Readers
/// that need a few categories of a large file (mmCIF) save storing the rest.
pub fn parse_selected<'a, 's>(
    file: &'a str,
    text: &'a str,
    select: impl Fn(&str) -> Keep<'s>,
) -> Result<CifDocument<'a>> {
    let mut lexer = Lexer::new(file, text);
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
                let last = match block.categories.last_mut() {
                    Some(last) if !last.is_loop && last.name.eq_ignore_ascii_case(category) => last,
                    _ => {
                        block.categories.push(Category {
                            name: category,
                            items: Vec::new(),
                            values: Vec::new(),
                            line,
                            is_loop: false,
                        });
                        let pushed = block.categories.len() - 1;
                        &mut block.categories[pushed]
                    }
                };
                if select(last.name).keeps(item) {
                    last.items.push(item);
                    last.values.push(value);
                }
            }
            Token::Loop => {
                let Some(block) = blocks.last_mut() else {
                    return Err(lexer.syntax(line, "a data_ block header", b"loop_"));
                };
                let (category, next) = read_loop(&mut lexer, line, &select)?;
                block.categories.push(category);
                pending = next;
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

/// Reads a loop after its `loop_` (at `loop_line`): the tags, then the values up to the
/// next tag, `loop_`, `data_`, `save_` or the end. Returns the category and the token that
/// ended it.
fn read_loop<'a, 's>(
    lexer: &mut Lexer<'a>,
    loop_line: u32,
    select: &impl Fn(&str) -> Keep<'s>,
) -> Result<(Category<'a>, Option<Token<'a>>)> {
    let mut all_items: Vec<&'a str> = Vec::new();
    let mut category_name: Option<&'a str> = None;
    let next = loop {
        match lexer.next_token()? {
            Some(Token::Tag(tag)) => {
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
                all_items.push(item);
            }
            other => break other,
        }
    };
    let Some(name) = category_name else {
        let found = token_text(next);
        return Err(lexer.syntax(loop_line, "a tag after loop_", found.as_bytes()));
    };
    let keep = select(name);
    let kept: Vec<bool> = all_items.iter().map(|item| keep.keeps(item)).collect();
    let items: Vec<&'a str> = all_items
        .iter()
        .zip(&kept)
        .filter_map(|(item, &k)| k.then_some(*item))
        .collect();
    let keep_all = items.len() == all_items.len();
    let mut values = Vec::new();
    let (mut count, mut column) = (0usize, 0usize);
    let mut push = |value: Value<'a>| {
        if keep_all || kept[column] {
            values.push(value);
        }
        count += 1;
        column += 1;
        if column == kept.len() {
            column = 0;
        }
    };
    let mut token = next;
    let next = loop {
        match token {
            Some(Token::Value(v)) => push(v),
            other => break other,
        }
        while let Some(value) = lexer.bare_value() {
            push(value);
        }
        token = lexer.next_token()?;
    };
    if column != 0 {
        return Err(ParseError::Syntax {
            file: lexer.file.to_string(),
            line: loop_line as usize,
            expected: format!(
                "a multiple of {} values in the loop of {name}",
                all_items.len()
            ),
            found: format!("{count} values"),
        });
    }
    Ok((
        Category {
            name,
            items,
            values,
            line: loop_line,
            is_loop: true,
        },
        next,
    ))
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

#[cfg(test)]
#[path = "cif_reference.rs"]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_loops_quotes_text_fields_and_nulls() {
        let text = "# comment\ndata_TEST\n_entry.id 1ABC\n_exptl.method 'X-RAY DIFFRACTION'\n\
                    _exptl.note\n;line one\nline two\n;\nloop_\n_atom.a\n_atom.b # trailing\n\
                    1 \"it's\"\n. ?\n'a'b' x\n";
        let doc = parse("t.cif", text).unwrap();
        let block = &doc.blocks[0];
        assert_eq!(block.name, "TEST");
        assert_eq!(
            block
                .category("_ENTRY")
                .unwrap()
                .value(0, "id")
                .unwrap()
                .text,
            "1ABC"
        );
        let exptl = block.category("_exptl").unwrap();
        assert_eq!(exptl.value(0, "method").unwrap().text, "X-RAY DIFFRACTION");
        let note = exptl.value(0, "note").unwrap();
        assert_eq!(note.text, "line one\nline two");
        assert_eq!(note.kind, ValueKind::TextField);
        assert_eq!(note.line, 6);
        let atom = block.category("_atom").unwrap();
        assert_eq!(atom.rows(), 3);
        let b: Vec<_> = atom
            .column("b")
            .unwrap()
            .iter()
            .map(|v| v.as_str())
            .collect();
        assert_eq!(b, vec![Some("it's"), None, Some("x")]);
        assert_eq!(atom.value(2, "a").unwrap().text, "a'b");
        assert_eq!(atom.value(1, "a").unwrap().kind, ValueKind::Inapplicable);
        assert_eq!(atom.value(1, "b").unwrap().line, 13);
    }

    #[test]
    fn rejects_wrong_loop_value_count_with_line() {
        let err = parse("x.cif", "data_x\nloop_\n_a.b\n_a.c\n1 2 3\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("multiple of 2"), "{err}");
    }

    #[test]
    fn rejects_unterminated_text_field_and_quote() {
        let err = parse("x.cif", "data_x\n_a.b\n;open\nnever closed\n").unwrap_err();
        assert_eq!(err.line(), Some(3));
        let err = parse("x.cif", "data_x\n_a.b 'open\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("closing '"), "{err}");
    }

    #[test]
    fn rejects_values_without_tags_and_missing_blocks() {
        assert!(parse("x.cif", "data_x\n_a.b 1 2\n").is_err());
        assert!(parse("x.cif", "_a.b 1\n").is_err());
        assert!(parse("x.cif", "# nothing\n").is_err());
        assert!(parse("x.cif", "data_x\n_a.b\n").is_err());
    }

    /// A hand-written CIF exercising every token kind, longer than one 64-byte window in
    /// places (long words, long whitespace runs), with CRLF and tab separators.
    const SAMPLE: &str = "# header comment\ndata_SAMPLE\n_entry.id 1ABC\n_Exptl.method 'X-RAY DIFFRACTION'\n\
        _exptl.details\n;line one\r\nline two ; not an end\n;\n_refine.ls_d_res_high 2.10\r\n\
        loop_\n_atom_site.group_PDB\n_atom_site.label_atom_id\n_atom_site.Cartn_x # comment\n\
        ATOM N 1.5\nATOM \"O5'\" -2.25\nHETATM . ?\nATOM 'a'b' 3\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\
        \t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\
        ATOM aVeryLongAtomNameThatCrossesTheSixtyFourByteWindowBoundaryForSureXXXXXXXXXXXXXXXXXXXX 7\n\
        #\nloop_\n_pdbx_audit_revision_history.ordinal\n_pdbx_audit_revision_history.revision_date\n\
        1 2001-01-01 2 1999-12-31\nsave_frame\n_saved.x 1\nsave_\ndata_second\n_b.c end";

    fn real_files() -> Vec<String> {
        let Some(dir) = std::env::var_os("SCALEFOLD_TESTDATA") else {
            eprintln!(
                "note: SCALEFOLD_TESTDATA is unset; the CIF parsers are compared on the built-in sample only"
            );
            return Vec::new();
        };
        let dir = std::path::PathBuf::from(dir).join("mmcif");
        ["3dg1_final.cif", "5i55.cif"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| {
                    panic!("SCALEFOLD_TESTDATA is set but {f} is unreadable: {e}")
                })
            })
            .collect()
    }

    /// Keeps two items of `_atom_site`, one of `_exptl` and nothing of any other category.
    fn some_items(category: &str) -> Keep<'static> {
        if category.eq_ignore_ascii_case("_atom_site") {
            Keep::Items(&["Cartn_x", "label_atom_id"])
        } else if category.eq_ignore_ascii_case("_exptl") {
            Keep::Items(&["METHOD"])
        } else {
            Keep::Items(&[])
        }
    }

    /// The reference document with [`some_items`]'s selection applied.
    fn select_reference<'a>(mut doc: CifDocument<'a>) -> CifDocument<'a> {
        for category in doc.blocks.iter_mut().flat_map(|b| b.categories.iter_mut()) {
            let keep = some_items(category.name);
            let stride = category.items.len();
            let kept: Vec<bool> = category.items.iter().map(|i| keep.keeps(i)).collect();
            category.values = category
                .values
                .iter()
                .enumerate()
                .filter(|(i, _)| kept[i % stride])
                .map(|(_, v)| *v)
                .collect();
            category.items.retain(|i| keep.keeps(i));
        }
        doc
    }

    /// The fast parser against the reference: the same document, or the same error.
    fn assert_same_as_reference(text: &str) {
        let fast = parse("m.cif", text).map_err(|e| e.to_string());
        let slow = reference::parse("m.cif", text).map_err(|e| e.to_string());
        assert_eq!(fast, slow, "input:\n{text}");
        let fast = parse_selected("m.cif", text, some_items).map_err(|e| e.to_string());
        let slow = slow.map(select_reference);
        assert_eq!(fast, slow, "selected, input:\n{text}");
    }

    #[test]
    fn fast_parser_matches_reference_on_sample_and_real_files() {
        assert_same_as_reference(SAMPLE);
        let doc = parse("s.cif", SAMPLE).unwrap();
        assert_eq!(doc.blocks.len(), 2);
        let atoms = doc.blocks[0].category("_atom_site").unwrap();
        assert_eq!(
            (atoms.rows(), atoms.value(1, "label_atom_id").unwrap().text),
            (5, "O5'")
        );
        assert_eq!(atoms.value(4, "Cartn_x").unwrap().line, 17);
        for text in real_files() {
            assert_same_as_reference(&text);
        }
    }

    proptest::proptest! {
        /// Both whitespace classifiers agree with the byte-by-byte definition.
        #[test]
        fn classifiers_match_byte_by_byte(block in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b" \t\r\na_#\x0b\x0c\x00\xff\x8a\xa0\x89".to_vec()),
                proptest::prelude::any::<u8>(),
            ],
            64,
        )) {
            let block: [u8; 64] = block.try_into().unwrap();
            let mut space = 0u64;
            let mut newline = 0u64;
            for (i, &b) in block.iter().enumerate() {
                space |= (is_space(b) as u64) << i;
                newline |= ((b == b'\n') as u64) << i;
            }
            proptest::prop_assert_eq!(classify(&block), (space, newline));
            proptest::prop_assert_eq!(classify_words(&block), (space, newline));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Random edits biased towards CIF's special bytes, at random places of the sample
        /// and of real files: both parsers agree on every result.
        #[test]
        fn fast_parser_matches_reference_on_mutations(
            which in 0usize..3,
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), 0usize..24, proptest::collection::vec(
                    proptest::sample::select(b" \t\r\n\n\n'\"#;_.?ab1-loop_data_save_global_stop_".to_vec()),
                    0..12,
                )),
                1..6,
            ),
        ) {
            let mut texts = vec![SAMPLE.to_string()];
            texts.extend(real_files());
            let mut bytes = texts[which % texts.len()].clone().into_bytes();
            for (at, delete, insert) in edits {
                let start = at % (bytes.len() + 1);
                let end = (start + delete).min(bytes.len());
                bytes.splice(start..end, insert);
            }
            // The inserted bytes are ASCII and deletions may split a character only in
            // real files' rare non-ASCII text: skip those.
            if let Ok(text) = std::str::from_utf8(&bytes) {
                assert_same_as_reference(text);
            }
        }
    }
}
