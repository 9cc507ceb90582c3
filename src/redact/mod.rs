//! PII redaction: finds email addresses, phone numbers, payment card numbers
//! and IBANs in free text and replaces each with a placeholder (`[EMAIL]`,
//! `[PHONE]`, `[CARD]`, `[IBAN]`).
//!
//! This module is pure: [`redact`] takes a `&str` and a [`RedactionPolicy`]
//! and returns the new text plus the byte spans (in the *original* text) it
//! replaced. It is deterministic, runs in time linear in the input (a handful
//! of single passes; the one regex, for emails, is compiled once into a
//! `LazyLock` and never backtracks), and never panics on any `&str`. Text
//! outside a match is copied byte for byte.
//!
//! The detailed rules live in the doc comments of the private submodules
//! `email`, `phone`, `card` and `iban`; this is the summary.
//!
//! # What is detected
//!
//! * **Email**: `local@domain.tld` with plus-addressing, dots,
//!   subdomains and non-ASCII letters in the local part and domain, and an
//!   ASCII top-level domain of two or more letters.
//! * **Phone**: national and international numbers as typed in English,
//!   German, French, Spanish, Italian, Portuguese and Dutch text
//!   (`+44 20 7946 0958`, `+1 (415) 555-2671`, `0044 20 …`, `(030) 12345678`,
//!   `030/1234567`, `06 12 34 56 78`, `+49-170-1234567`, `555-123-4567`,
//!   `415.555.2671`, `612 34 56 78`, `333 1234567`): 7..=15 digits that
//!   start like a phone number (`+`, `00`, a parenthesised area code, a trunk
//!   `0`, the North-American 3-3-4 layout, or the grouped nine-digit
//!   Spanish/Portuguese and `3xx` Italian mobile numbers, which have no
//!   trunk `0`), standing alone and not vetoed by a context word.
//! * **Card**: 14..=19 digits, compact or grouped by single spaces or hyphens
//!   the way cards are printed (4-4-4-4, 4-6-5, …), with a known scheme
//!   prefix (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay,
//!   Maestro, Mir) and a length that scheme issues, passing the Luhn check.
//! * Look-alike separators and digits (Unicode dashes, fullwidth digits,
//!   no-break spaces) and invisible characters inside a match are read as
//!   their ASCII forms or dropped (`View`), besides the text as it is.
//! * **IBAN**: country code, check digits and BBAN, compact or in groups of
//!   four separated by single spaces, any case, with the registered length
//!   for 40 European countries (15..=34 elsewhere), passing the ISO 13616
//!   mod-97 check.
//!
//! # What deliberately is not
//!
//! * Numbers that merely *could* be phones: plain long integers without a
//!   phone prefix or grouping (`ticket 20231130123`), order/invoice/tracking/
//!   reference numbers (by shape, or by a context word such as "order",
//!   "Bestellnr.", "commande", "pedido", "#"), dates, times, versions, prices,
//!   percentages, postcodes, years, ISBNs, IMEIs and tracking codes. A missed
//!   phone number is the price of not mangling the numbers feedback is full
//!   of. Seven-digit local numbers without an area code (`555-1234`) and
//!   ungrouped North-American numbers (`4155552671`) are not detected for the
//!   same reason.
//! * Social-media handles (`@acme_support`), `user@localhost`, obfuscated
//!   addresses (`jean [at] exemple [dot] fr`) and file names such as
//!   `icon@2x.png`.
//! * Luhn-valid digit strings that are not standalone numbers (inside a
//!   tracking code such as `1Z999AA10123456784`) or lack a known card prefix,
//!   13-digit "Visa" numbers (they collide with EAN-13 barcodes), and card
//!   numbers split in layouts no card uses.
//! * Names, postal addresses, dates of birth, national ids, IP addresses:
//!   out of scope for this module.
//!
//! # Precedence
//!
//! Every detector runs on the whole text regardless of the policy, so that a
//! span is classified the same way whatever is being redacted. Then:
//!
//! 1. a phone candidate that overlaps a card candidate is dropped (card wins
//!    over phone), and so is one inside an IBAN-shaped span whose checksum
//!    fails (`NL91 ABNA 0417 1643 01` is left alone, not half-redacted);
//! 2. the remaining candidates are taken by earliest start, then longest
//!    span (ties: card, IBAN, email, phone), skipping any that overlap one
//!    already taken;
//! 3. only the survivors whose kind is in the policy are replaced; the rest
//!    of the text, including spans of other kinds, is left alone.

mod card;
mod email;
mod iban;
mod phone;
mod scan;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A kind of personal data the redactor recognises.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
}

impl PiiKind {
    /// Every kind, in the order of [`Ord`].
    pub const ALL: [PiiKind; 4] = [PiiKind::Email, PiiKind::Phone, PiiKind::Card, PiiKind::Iban];

    /// The text that replaces a match: `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Card => "[CARD]",
            PiiKind::Iban => "[IBAN]",
        }
    }

    /// The lowercase name used in policies and serialisation: `email`,
    /// `phone`, `card`, `iban`.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Iban => "iban",
        }
    }

    /// Which kind wins when two candidates have the same start and length.
    fn tie_rank(self) -> u8 {
        match self {
            PiiKind::Card => 0,
            PiiKind::Iban => 1,
            PiiKind::Email => 2,
            PiiKind::Phone => 3,
        }
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn valid_names() -> String {
    PiiKind::ALL.map(PiiKind::name).join(", ")
}

impl FromStr for PiiKind {
    type Err = String;

    /// `email`, `phone`, `card` or `iban`, case-insensitive, surrounding
    /// whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        PiiKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| format!("unknown PII kind {s:?}: expected one of {}", valid_names()))
    }
}

/// A set of kinds to redact, parsed from `"email,phone,card,iban"` (also
/// `"all"`, and `"none"` or `""` for the empty set).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedactionPolicy {
    pub kinds: BTreeSet<PiiKind>,
}

impl RedactionPolicy {
    /// Every kind.
    pub fn all() -> Self {
        RedactionPolicy {
            kinds: PiiKind::ALL.into_iter().collect(),
        }
    }

    /// No kind: [`redact`] returns the text unchanged.
    pub fn none() -> Self {
        RedactionPolicy::default()
    }

    /// Parses a comma-separated list of kind names, case-insensitive, with
    /// optional spaces around the names; duplicates are fine, empty items are
    /// ignored. `all` stands for every kind and may be combined with names;
    /// `none` (or an empty/blank string) is the empty set and must stand
    /// alone.
    pub fn parse_list(s: &str) -> Result<Self, String> {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if items.iter().any(|t| t.eq_ignore_ascii_case("none")) {
            return if items.len() == 1 {
                Ok(RedactionPolicy::none())
            } else {
                Err(format!(
                    "\"none\" cannot be combined with other kinds in {s:?}"
                ))
            };
        }
        let mut kinds = BTreeSet::new();
        for item in items {
            if item.eq_ignore_ascii_case("all") {
                kinds.extend(PiiKind::ALL);
            } else {
                let kind = item.parse::<PiiKind>().map_err(|_| {
                    let valid = valid_names();
                    format!("unknown PII kind {item:?}: valid kinds are {valid}, \"all\", \"none\"")
                })?;
                kinds.insert(kind);
            }
        }
        Ok(RedactionPolicy { kinds })
    }

    /// Whether nothing is to be redacted.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Whether this kind is to be redacted.
    pub fn contains(&self, kind: PiiKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// The canonical list, in [`PiiKind::ALL`] order: `"email,phone"`;
    /// `"none"` for the empty set. [`RedactionPolicy::parse_list`] reads it
    /// back.
    pub fn to_list(&self) -> String {
        if self.kinds.is_empty() {
            return "none".to_owned();
        }
        self.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromStr for RedactionPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RedactionPolicy::parse_list(s)
    }
}

impl fmt::Display for RedactionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list())
    }
}

/// One replaced span: its kind and its byte range `start..end` in the
/// original text (both on `char` boundaries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// The result of [`redact`]: the new text and the replaced spans, sorted by
/// start and non-overlapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub redactions: Vec<Redaction>,
}

impl Redacted {
    /// Whether anything was replaced.
    pub fn changed(&self) -> bool {
        !self.redactions.is_empty()
    }
}

/// Replaces every match of the policy's kinds with its placeholder. Pure,
/// deterministic, linear in the input, never panics. See the module
/// documentation for the rules and their precedence.
pub fn redact(text: &str, policy: &RedactionPolicy) -> Redacted {
    let unchanged = || Redacted {
        text: text.to_owned(),
        redactions: Vec::new(),
    };
    if policy.is_empty() {
        return unchanged();
    }
    let view = View::of(text);
    let seen = view.as_ref().map_or(text, |v| v.text.as_str());
    // Every kind needs a digit or an `@`.
    if !seen.bytes().any(|c| c.is_ascii_digit() || c == b'@') {
        return unchanged();
    }
    // The view adds what look-alikes hid; the text as it is keeps what the
    // view would lose (a number glued to an em dash reads as glued to a
    // hyphen there, which the detectors refuse).
    let found = match &view {
        None => detect(text),
        Some(view) => {
            let mut both = detect(text);
            both.extend(detect(seen).into_iter().map(|r| view.original(r)));
            resolve(both)
        }
    };
    let redactions: Vec<Redaction> = found
        .into_iter()
        .filter(|r| policy.contains(r.kind))
        .collect();
    if redactions.is_empty() {
        return unchanged();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in &redactions {
        out.push_str(&text[last..r.start]);
        out.push_str(r.kind.placeholder());
        last = r.end;
    }
    out.push_str(&text[last..]);
    Redacted {
        text: out,
        redactions,
    }
}

/// What the detectors read where the text holds look-alikes of what they
/// match: Unicode dashes and minus signs (a word processor's en dash
/// between card groups: `4111–1111–1111–1111`), and cp1252's dashes read
/// as Latin-1 (U+0096, U+0097), are `-`; fullwidth digits and `＠` are
/// ASCII; no-break and thin spaces are spaces; invisible characters (zero
/// width space and joiners, soft hyphen, word joiner, byte order mark)
/// are dropped (`exam\u{200B}ple.com`). Each byte remembers the span of
/// the original character it stands for, so a match covers exactly the
/// original characters, invisible ones included. The search index splits
/// words at these characters too, so such numbers were found by a search
/// and shown in its snippets. `redact` reads both the text and its view.
struct View {
    text: String,
    /// Per byte of `text`: the original character's start and end.
    spans: Vec<(usize, usize)>,
    /// The original text's length.
    len: usize,
}

impl View {
    /// `None` when the text holds none of the characters it maps.
    fn of(text: &str) -> Option<View> {
        if text.is_ascii() || !text.chars().any(|c| Self::map(c) != Some(c)) {
            return None;
        }
        let mut view = View {
            text: String::with_capacity(text.len()),
            spans: Vec::with_capacity(text.len()),
            len: text.len(),
        };
        for (at, c) in text.char_indices() {
            let span = (at, at + c.len_utf8());
            if let Some(m) = Self::map(c) {
                view.text.push(m);
                view.spans.extend(std::iter::repeat_n(span, m.len_utf8()));
            }
        }
        Some(view)
    }

    /// The character the detectors see for `c` (`None`: dropped).
    fn map(c: char) -> Option<char> {
        match c {
            '\u{2010}'..='\u{2015}'
            | '\u{2212}'
            | '\u{FE58}'
            | '\u{FE63}'
            | '\u{FF0D}'
            | '\u{96}'
            | '\u{97}' => Some('-'),
            '\u{FF10}'..='\u{FF19}' => char::from_u32(c as u32 - 0xFF10 + u32::from(b'0')),
            '\u{FF20}' => Some('@'),
            '\u{A0}' | '\u{2007}' | '\u{2009}' | '\u{202F}' => Some(' '),
            '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => None,
            c => Some(c),
        }
    }

    /// `r`, found in the view, as a span of the original text.
    fn original(&self, r: Redaction) -> Redaction {
        let start = self.spans.get(r.start).map_or(self.len, |s| s.0);
        let end = r
            .end
            .checked_sub(1)
            .and_then(|last| self.spans.get(last))
            .map_or(start, |s| s.1);
        Redaction {
            kind: r.kind,
            start: start.min(end),
            end,
        }
    }
}

/// Every PII span in the text, of every kind, after precedence: sorted,
/// non-overlapping.
fn detect(text: &str) -> Vec<Redaction> {
    let mut cards = Vec::new();
    card::find(text, &mut cards);
    let mut phones = Vec::new();
    phone::find(text, &mut phones);
    let mut all = Vec::new();
    let mut iban_shapes = Vec::new();
    email::find(text, &mut all);
    iban::find(text, &mut all, &mut iban_shapes);
    // Card beats phone, and the digits of an IBAN-shaped span with a bad
    // checksum are no phone either.
    all.extend(
        phones
            .into_iter()
            .filter(|p| !overlaps_any(&cards, p) && !overlaps_any(&iban_shapes, p)),
    );
    all.extend(cards);
    resolve(all)
}

/// Whether `r` overlaps a span of `sorted` (sorted by start, non-overlapping):
/// only the last one starting before `r` ends can.
fn overlaps_any(sorted: &[Redaction], r: &Redaction) -> bool {
    let i = sorted.partition_point(|c| c.start < r.end);
    i > 0 && sorted[i - 1].end > r.start
}

/// Earliest start, then longest, then [`PiiKind::tie_rank`]; a candidate
/// overlapping one already taken is dropped.
fn resolve(mut cands: Vec<Redaction>) -> Vec<Redaction> {
    cands.sort_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.kind.tie_rank().cmp(&b.kind.tie_rank()))
    });
    let mut out: Vec<Redaction> = Vec::with_capacity(cands.len());
    for c in cands {
        if out.last().is_none_or(|l| c.start >= l.end) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
