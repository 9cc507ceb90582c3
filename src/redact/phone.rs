//! Phone numbers, national and international, as people type them.
//!
//! # Shape
//!
//! A candidate is a maximal *run*: an optional `+` (or a parenthesised
//! country code such as `(+49)`), then digit groups, where a group is a
//! digit sequence or a parenthesised one of 1..=5 digits (`(030)`, `(0)`,
//! `(415)`), and groups are separated by one space (also NBSP, thin or
//! narrow no-break space), one of `-` `.` `/` (`-` and `/` may have a space on
//! each side: `030 / 1234567`), or nothing next to a parenthesis (`(0)30`).
//! Colons, commas and letters end a run, so times (`10:30`) and prices
//! (`1,299.00`) never join one.
//!
//! # Acceptance
//!
//! The run (after dropping a leading or trailing date chunk, see below) is a
//! phone number when all of these hold:
//!
//! * it has 7..=15 digits (E.164), not counting an international `00` prefix
//!   or a `(0)` trunk marker;
//! * it *starts like a phone number*: `+` and a non-zero digit, `00` and a
//!   non-zero digit, a parenthesised area code, a national trunk `0`
//!   (`030 1234567`, `06 12 34 56 78`), the North-American 3-3-4 layout
//!   with an area code 2xx..9xx (`555-123-4567`, `415.555.2671`, optionally
//!   after `1-`), or a grouped nine-digit Spanish/Portuguese number or
//!   Italian `3xx` mobile, which have no trunk `0` (`612 34 56 78`,
//!   `912 345 678`, `333 1234567`; see `no_trunk_national`). Plain long
//!   integers (`ticket 20231130123`), order numbers (`4711-2231-99`),
//!   ISO/US dates (`2026-11-30`, `11/30/2026`), versions (`10.0.19045`),
//!   IMEIs, ISBN-13s and postcodes all fail here;
//! * a one-digit group appears only first (`+1`, `1-800`, `0 800`), right
//!   after an international prefix (`+33 6 12 34 56 78`), as `(0)`, or as a
//!   hyphenated extension (`030 1234567-0`) of a number that does not itself
//!   start with a one-digit group; this rejects ISBN-10s (`0-306-40615-2`),
//!   version strings and list numbering;
//! * a number made only of two-digit groups has exactly five of them (the
//!   French/Dutch `06 12 34 56 78`), so lottery numbers and lists of small
//!   numbers are not phones;
//! * it is not a range of times (`09.00-17.00`, `08 00 - 18 00`);
//! * with `.` separators every group has at least two digits (`0.123456789`
//!   is a decimal, `06.12.34.56.78` a French number);
//! * at most 8 groups;
//! * the number stands alone ([`super::scan::left_ok`], [`super::scan::right_ok`]):
//!   not glued to letters (`v10.0.19045`, tracking codes `1Z999AA1…`,
//!   `JJD000…`), not part of a mail address, URL or path, not followed by `%`,
//!   not next to a currency symbol or code (`€ 0800 1234`, `0 800 123 EUR`);
//! * no *context word* says it is something else (see below).
//!
//! A run that fails as a whole is split at spaced `/` and `-` separators
//! and each part is tried on its own (`0170 1234567 / 030 1234567` holds two
//! numbers).
//!
//! A whitespace-separated chunk of exactly three groups shaped like a date
//! (`01.12.2026`, `01/12/26`, `2026-01-12`) is never part of a phone number:
//! a run that is such a date is rejected, and one at either end of a longer
//! run is cut off (`am 01.12.2026 0170 1234567` still yields the phone).
//!
//! # Context words
//!
//! The words before the number (up to three, counting fillers) are checked against a short,
//! multilingual list of things that are numbered but are not phones: order,
//! invoice, ticket, tracking, reference, customer and contract numbers, ISBN,
//! EAN, SKU, IBAN... (`order`, `Bestellnr.`, `commande`, `pedido`, `ordine`,
//! `encomenda`, `bestelling`, `factura`, `Rechnung`, `suivi`, `ref`, `#`, ...).
//! German and Dutch compounds match by prefix (`Bestellnummer`,
//! `Rechnungsnr`, `factuurnummer`); words such as "number", "Nr.", "no.",
//! "numéro", "de" between the keyword and the number are skipped
//! (`order no. 0170 1234567`, `numéro de commande 0612345678`). A `#` right
//! before the number always vetoes it.

use super::scan::{after, before, digits_at, is_currency, left_ok, right_ok, space_at};
use super::{PiiKind, Redaction};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sep {
    First,
    /// Whitespace only.
    Space,
    /// `-`, `.` or `/`, with the flag telling whether spaces surround it.
    Punct(u8, bool),
    /// No separator: next to a parenthesised group.
    Adjacent,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    /// Byte range, parentheses (and a `+` inside them) included.
    start: usize,
    end: usize,
    /// Where the digits start: `start`, or after `(` / `(+`.
    digit_start: usize,
    paren: bool,
    sep: Sep,
}

impl Group {
    fn digits<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        &b[self.digit_start..self.end - usize::from(self.paren)]
    }

    fn len(&self) -> usize {
        self.end - usize::from(self.paren) - self.digit_start
    }

    /// `(0)`, the trunk prefix written after a country code.
    fn is_trunk(&self, b: &[u8]) -> bool {
        self.paren && self.digits(b) == b"0"
    }
}

struct Run {
    start: usize,
    plus: bool,
    groups: Vec<Group>,
}

const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 15;
const MAX_GROUPS: usize = 8;

/// A digit group or a parenthesised group of 1..=5 digits at `i`, with `sep`
/// before it.
fn group_at(b: &[u8], i: usize, sep: Sep) -> Option<Group> {
    let paren = b.get(i) == Some(&b'(');
    let digit_start = i + usize::from(paren);
    let n = digits_at(b, digit_start);
    let ok = if paren {
        (1..=5).contains(&n) && b.get(digit_start + n) == Some(&b')')
    } else {
        n > 0
    };
    ok.then_some(Group {
        start: i,
        end: digit_start + n + usize::from(paren),
        digit_start,
        paren,
        sep,
    })
}

/// A country code in parentheses with its plus: `(+49)`.
fn plus_paren_at(b: &[u8], i: usize) -> Option<Group> {
    if b.get(i..i + 2) != Some(b"(+") {
        return None;
    }
    let n = digits_at(b, i + 2);
    ((1..=3).contains(&n) && b.get(i + 2 + n) == Some(&b')')).then_some(Group {
        start: i,
        end: i + n + 3,
        digit_start: i + 2,
        paren: true,
        sep: Sep::First,
    })
}

fn parse_run(b: &[u8], start: usize) -> Option<Run> {
    let (plus, first) = match plus_paren_at(b, start) {
        Some(g) => (true, g),
        None => {
            let plus = b[start] == b'+';
            (plus, group_at(b, start + usize::from(plus), Sep::First)?)
        }
    };
    let mut groups = vec![first];
    loop {
        let last = groups[groups.len() - 1];
        let q = last.end;
        let s1 = q + space_at(b, q);
        let (sep, next) = match b.get(s1) {
            Some(&c @ (b'-' | b'.' | b'/')) => {
                let s3 = s1 + 1 + space_at(b, s1 + 1);
                let spaced = s1 > q || s3 > s1 + 1;
                if spaced && c == b'.' {
                    break;
                }
                (Sep::Punct(c, spaced), s3)
            }
            _ if s1 > q => (Sep::Space, s1),
            Some(b'(') => (Sep::Adjacent, q),
            _ if last.paren => (Sep::Adjacent, q),
            _ => break,
        };
        let Some(group) = group_at(b, next, sep) else {
            break;
        };
        groups.push(group);
    }
    Some(Run {
        start,
        plus,
        groups,
    })
}

fn value(d: &[u8]) -> u32 {
    d.iter().fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
}

/// Whether these three groups (one whitespace-free chunk) are a date:
/// d.m.y / m/d/y / d-m-y with a 2- or 4-digit year, or y-m-d.
fn is_date(b: &[u8], g: &[Group]) -> bool {
    let [x, y, z] = g else { return false };
    if x.paren || y.paren || z.paren {
        return false;
    }
    let same_sep =
        matches!((y.sep, z.sep), (Sep::Punct(c1, false), Sep::Punct(c2, false)) if c1 == c2);
    if !same_sep {
        return false;
    }
    let (dx, dy, dz) = (x.digits(b), y.digits(b), z.digits(b));
    let small = |d: &[u8]| (1..=2).contains(&d.len()) && (1..=31).contains(&value(d));
    let year = |d: &[u8]| d.len() == 2 || (d.len() == 4 && (1900..=2099).contains(&value(d)));
    (small(dx) && small(dy) && year(dz)) || (dx.len() == 4 && year(dx) && small(dy) && small(dz))
}

/// Splits the groups into whitespace-separated chunks: index ranges.
fn chunks(groups: &[Group]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    for (i, g) in groups.iter().enumerate().skip(1) {
        if g.sep == Sep::Space {
            out.push((from, i));
            from = i;
        }
    }
    out.push((from, groups.len()));
    out
}

pub(super) fn find(text: &str, out: &mut Vec<Redaction>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let may_start = c.is_ascii_digit()
            || ((c == b'+' || c == b'(')
                && (group_at(b, i + usize::from(c == b'+'), Sep::First).is_some()
                    || plus_paren_at(b, i).is_some()));
        if !may_start {
            i += 1;
            continue;
        }
        let Some(run) = parse_run(b, i) else {
            i += 1;
            continue;
        };
        let g = &run.groups;
        let run_end = g[g.len() - 1].end;
        let mut push = |(start, end)| {
            out.push(Redaction {
                kind: PiiKind::Phone,
                start,
                end,
            })
        };
        if let Some(span) = evaluate(text, run.start, run.plus, g) {
            push(span);
        } else if g.len() <= 3 * MAX_GROUPS {
            // ` / ` and ` - ` also separate two numbers (`0170 1234567 /
            // 030 1234567`): try each segment on its own.
            let mut from = 0;
            for k in 1..=g.len() {
                if k == g.len() || matches!(g[k].sep, Sep::Punct(_, true)) {
                    if from > 0 || k < g.len() {
                        let plus = run.plus && from == 0;
                        let start = if plus { run.start } else { g[from].start };
                        if let Some(span) = evaluate(text, start, plus, &g[from..k]) {
                            push(span);
                        }
                    }
                    from = k;
                }
            }
        }
        i = run_end;
    }
}

/// The span of the phone number in this run, if it holds one.
/// `start` is where the groups begin, including a leading `+` when `plus`.
fn evaluate(text: &str, start: usize, plus: bool, g: &[Group]) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    if g.len() > 3 * MAX_GROUPS {
        return None; // a long list of numbers, not one phone
    }
    let ch = chunks(g);
    let (mut lo, mut hi) = (0, g.len());
    let (first, last) = (ch[0], ch[ch.len() - 1]);
    if ch.len() > 1 && is_date(b, &g[first.0..first.1]) {
        lo = first.1;
    }
    if ch.len() > 1 && is_date(b, &g[last.0..last.1]) {
        hi = last.0;
    }
    if lo >= hi {
        return None;
    }
    if ch
        .iter()
        .any(|&(s, e)| s >= lo && e <= hi && is_date(b, &g[s..e]))
    {
        return None;
    }
    let plus = plus && lo == 0;
    let start = if plus { start } else { g[lo].start };
    let end = g[hi - 1].end;
    accept(text, plus, &g[lo..hi], start, end).then_some((start, end))
}

fn accept(text: &str, plus: bool, g: &[Group], start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    if g.len() > MAX_GROUPS {
        return false;
    }
    let d0 = g[0].digits(b);
    let intl_00 = !plus && !g[0].paren && d0.len() >= 3 && d0.starts_with(b"00");
    let international = plus || intl_00;

    // Digit count, E.164 style.
    let mut count: usize = g.iter().filter(|x| !x.is_trunk(b)).map(Group::len).sum();
    if intl_00 {
        count -= 2;
    }
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&count) {
        return false;
    }

    // One-digit groups only where real numbers have them: first (`+1`,
    // `1-800`, `0 800`), right after the country code (`+33 6 …`, also
    // behind a `(0)`), or as an extension after a hyphen
    // (`030 1234567-0`, but not the check digit of `0-306-40615-2`).
    let mut k = 0; // index among the groups that are not `(0)`
    for (j, x) in g.iter().enumerate() {
        if x.is_trunk(b) {
            continue;
        }
        let ok = k == 0
            || (k == 1 && international)
            || (j == g.len() - 1 && x.sep == Sep::Punct(b'-', false) && g[0].len() >= 2);
        if x.len() == 1 && !x.paren && !ok {
            return false;
        }
        k += 1;
    }
    // Dotted numbers: every group two digits or more.
    if g.iter().any(|x| matches!(x.sep, Sep::Punct(b'.', _)))
        && g.iter()
            .enumerate()
            .any(|(i, x)| x.len() < 2 && !(i == 0 && plus))
    {
        return false;
    }
    // Pairs only (`06 12 34 56 78`): the French/Dutch ten-digit layout, not a
    // list of small numbers (`lotto 03 11 22 35 41 49`).
    if !international && g.iter().all(|x| x.len() == 2 && !x.paren) && g.len() != 5 {
        return false;
    }
    if is_time_range(b, g) {
        return false;
    }

    let prefix_ok = if plus {
        d0[0] != b'0'
    } else if g[0].paren {
        d0.len() >= 2
    } else if intl_00 {
        d0[2] != b'0'
    } else {
        d0[0] == b'0' || north_american(b, g) || no_trunk_national(b, g)
    };
    if !prefix_ok {
        return false;
    }

    left_ok(text, start)
        && right_ok(text, end)
        && !near_currency(text, start, end)
        && !vetoed_by_context(text, start)
}

/// Opening hours: pieces separated by `-`, each a time `HH`, `HH.MM` or
/// `HH MM` (`09.00-17.00`, `08 00 - 18 00`).
fn is_time_range(b: &[u8], g: &[Group]) -> bool {
    let is_time = |p: &[Group]| match p {
        [h] => !h.paren && h.len() <= 2 && value(h.digits(b)) <= 24,
        [h, m] => {
            !h.paren
                && !m.paren
                && h.len() <= 2
                && value(h.digits(b)) <= 24
                && m.len() == 2
                && value(m.digits(b)) <= 59
                && matches!(m.sep, Sep::Space | Sep::Punct(b'.', false))
        }
        _ => false,
    };
    let mut from = 0;
    let mut n = 0;
    for k in 1..=g.len() {
        if k == g.len() || matches!(g[k].sep, Sep::Punct(b'-', _)) {
            if !is_time(&g[from..k]) {
                return false;
            }
            n += 1;
            from = k;
        }
    }
    n >= 2
}

/// `555-123-4567`, `415.555.2671`, `415 555 2671`, `1-800-555-0199`: groups
/// 3-3-4 (optionally after a `1`), area code 2xx..9xx, separated by `-`, `.`
/// or a space.
fn north_american(b: &[u8], g: &[Group]) -> bool {
    let g = match g {
        [one, rest @ ..] if one.digits(b) == b"1" && rest.len() == 3 => rest,
        _ => g,
    };
    let [a, x, y] = g else { return false };
    let seps_ok = [x.sep, y.sep]
        .iter()
        .all(|s| matches!(s, Sep::Space | Sep::Punct(b'-' | b'.', false)));
    !a.paren
        && !x.paren
        && !y.paren
        && seps_ok
        && a.end - a.start == 3
        && x.end - x.start == 3
        && y.end - y.start == 4
        && b[a.start] >= b'2'
}

/// Spain and Portugal dial nine digits without a trunk `0` (mobiles 6xx/7xx
/// and 9xx, landlines 8xx/9xx in Spain and 2xx in Portugal), and Italian
/// mobiles are `3xx` plus six or seven digits: `612 34 56 78`,
/// `912 345 678`, `333 1234567`, `347 123 45 67`. Accepted when the first
/// group has exactly three digits with one of those leading digits, every
/// later group has two or more, there are at least two groups separated by
/// spaces, `-` or `.`, and the total is 9 (10 for a `3xx` mobile). A last
/// group of `000` means a round amount written with thousands separators
/// (`250 000 000`), not a phone.
fn no_trunk_national(b: &[u8], g: &[Group]) -> bool {
    let Some((first, rest)) = g.split_first() else {
        return false;
    };
    if first.paren || first.end - first.start != 3 || rest.is_empty() {
        return false;
    }
    let total: usize = g.iter().map(|x| x.end - x.start).sum();
    let lead = b[first.start];
    let total_ok = total == 9 || (lead == b'3' && total == 10);
    let groups_ok = rest.iter().all(|x| {
        !x.paren
            && x.end - x.start >= 2
            && matches!(x.sep, Sep::Space | Sep::Punct(b'-' | b'.', false))
    });
    let last = rest[rest.len() - 1];
    matches!(lead, b'2' | b'3' | b'6'..=b'9')
        && total_ok
        && groups_ok
        && &b[last.start..last.end] != b"000"
}

/// A currency symbol or ISO code right before or after the number (one space
/// allowed): a price, not a phone.
fn near_currency(text: &str, start: usize, end: usize) -> bool {
    let prev = match before(text, start) {
        (Some(' ' | '\u{a0}'), p) => p,
        (p, _) => p,
    };
    if prev.is_some_and(is_currency) {
        return true;
    }
    let rest = text[end..].trim_start_matches([' ', '\u{a0}']);
    if after(rest, 0).0.is_some_and(is_currency) {
        return true;
    }
    let code: String = rest.chars().take(4).collect();
    let word = code
        .split(|c: char| !c.is_alphabetic())
        .next()
        .unwrap_or("");
    matches!(
        word.to_ascii_uppercase().as_str(),
        "EUR" | "USD" | "GBP" | "CHF" | "SEK" | "NOK" | "DKK" | "PLN" | "CZK"
    )
}

/// Words (lowercased prefixes) naming a number that is not a phone number.
const VETO_PREFIXES: &[&str] = &[
    // en
    "order",
    "invoice",
    "ticket",
    "track",
    "referen",
    "referê",
    "shipment",
    "parcel",
    "package",
    "serial",
    "transaction",
    "contract",
    // de / nl
    "bestel",
    "auftrag",
    "rechnung",
    "sendung",
    "paket",
    "kundennr",
    "kundennum",
    "vertrag",
    "vorgang",
    "factuur",
    "klantnummer",
    "zending",
    "pakket",
    "artikel",
    // fr
    "commande",
    "factur",
    "suivi",
    "colis",
    "réf",
    "dossier",
    // es / pt / it
    "pedido",
    "seguimiento",
    "envío",
    "fatur",
    "encomenda",
    "rastre",
    "ordine",
    "fattur",
    "spedizion",
    "riferiment",
];

/// Words that veto only as a whole word (as prefixes they would catch too
/// much: "Kundenservice", "customer service", "cases").
const VETO_WORDS: &[&str] = &[
    "ref", "id", "isbn", "ean", "sku", "iban", "imei", "upc", "lot", "po", "case", "customer",
    "account",
];

/// Words skipped between a veto word and the number.
const FILLERS: &[&str] = &[
    "no", "nr", "n", "num", "nro", "number", "nummer", "numéro", "numero", "número", "de", "di",
    "del", "do", "of",
];

fn vetoed_by_context(text: &str, start: usize) -> bool {
    let is_gap =
        |c: char| c.is_whitespace() || matches!(c, ':' | '.' | '-' | '(' | '\'' | '’' | '°' | 'º');
    let mut rest = &text[..start];
    for step in 0..3 {
        // Skip spaces and label punctuation; a `#` always vetoes.
        let trimmed = rest.trim_end_matches(is_gap);
        if trimmed.ends_with('#') {
            return true;
        }
        if step > 0 && trimmed.len() == rest.len() {
            return false; // the previous word is not separated by a gap
        }
        let word_len: usize = trimmed
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric())
            .take(40)
            .map(char::len_utf8)
            .sum();
        if word_len == 0 {
            return false;
        }
        let word = trimmed[trimmed.len() - word_len..].to_lowercase();
        if VETO_WORDS.contains(&word.as_str()) || VETO_PREFIXES.iter().any(|p| word.starts_with(p))
        {
            return true;
        }
        if !FILLERS.contains(&word.as_str()) {
            return false;
        }
        rest = &trimmed[..trimmed.len() - word_len];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        find(s, &mut v);
        v.iter().map(|r| &s[r.start..r.end]).collect()
    }

    #[test]
    fn runs_and_chunks() {
        let b = b"+44 (0)20 7946-0958";
        let r = parse_run(b, 0).unwrap();
        assert!(r.plus);
        assert_eq!(r.groups.len(), 5);
        assert_eq!(chunks(&r.groups), vec![(0, 1), (1, 3), (3, 5)]);
    }

    #[test]
    fn dates_are_recognised() {
        for d in ["01.12.2026", "1/2/26", "2026-01-12", "30.11.2026"] {
            let r = parse_run(d.as_bytes(), 0).unwrap();
            assert!(is_date(d.as_bytes(), &r.groups), "{d}");
        }
        for d in ["06.12.34.56", "01.12 2026", "01.12-2026", "45.12.2026"] {
            let r = parse_run(d.as_bytes(), 0).unwrap();
            assert!(!is_date(d.as_bytes(), &r.groups), "{d}");
        }
    }

    #[test]
    fn context() {
        assert!(vetoed_by_context("order no. 0", 10));
        assert!(vetoed_by_context("Bestellnummer: 0", 15));
        assert!(vetoed_by_context("numéro de commande 0", 20));
        assert!(vetoed_by_context("#0", 1));
        assert!(vetoed_by_context("Ticket-ID: 0", 11));
        assert!(!vetoed_by_context("phone number 0", 13));
        assert!(!vetoed_by_context("Telefonnummer: 0", 15));
        assert!(!vetoed_by_context("0", 0));
    }

    #[test]
    fn date_chunks_are_cut_off() {
        assert_eq!(spans("am 01.12.2026 0170 1234567"), vec!["0170 1234567"]);
        assert_eq!(spans("0170 1234567 01.12.2026"), vec!["0170 1234567"]);
        assert!(spans("01.12.2026").is_empty());
    }
}
