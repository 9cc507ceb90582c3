//! Payment card numbers (PANs).
//!
//! A candidate is a run of digit groups separated by single spaces or single
//! hyphens (one kind of separator per number), in one of the layouts card
//! numbers are printed and typed in:
//!
//! * compact, 13..=19 digits (`4111111111111111`);
//! * groups of four, the last group 2..=4 long (`4111 1111 1111 1111`,
//!   `3852 0000 0232 37`), or four groups of four and a last one of 1..=3
//!   (19-digit Visa/Maestro);
//! * 4-6-5 (American Express, `3782 822463 10005`) and 4-6-4 (Diners).
//!
//! The digits must pass the Luhn check and start with the IIN of a known
//! scheme, with a length that scheme issues: Visa `4` (16 or 19; the retired
//! 13-digit Visa is left out because every EAN-13 barcode starting with 4,
//! German products, would then be a card one time in ten), Mastercard
//! `51`..`55` and `2221`..`2720` (16), American Express `34`/`37` (15),
//! Discover `6011`/`644`..`649`/`65` (16..=19), Diners `300`..`305`/`3095`/
//! `36`/`38`/`39` (14..=19), JCB `3528`..`3589` (16..=19), UnionPay `62`,
//! Maestro `50`/`56`..`58`/`63`/`67` and Mir `2200`..`2204` (16..=19).
//!
//! The number must stand alone (see [`super::scan::left_ok`]): digits inside
//! a word, such as the Luhn-valid tail of a tracking code `1Z999AA1…` or
//! `JJD00…`, never match. Inside a longer run of groups a card may start
//! after a space and end before a space (`0176 4111 1111 1111 1111` still
//! yields the card), but never in the middle of a hyphenated id.
//!
//! Unlike phones, context words ("order", "tracking") do not veto a card: a
//! leaked card number costs far more than a redacted order number.

use super::scan::{digits_at, left_ok, luhn_ok, right_ok, space_at};
use super::{PiiKind, Redaction};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sep {
    First,
    Space,
    Hyphen,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    start: usize,
    end: usize,
    sep: Sep,
}

/// Whether the group lengths form a layout cards are written in.
fn layout_ok(lens: &[usize]) -> bool {
    match lens {
        [n] => (13..=19).contains(n),
        [4, 6, 4] | [4, 6, 5] => true,
        [4, 4, 4, last] => (2..=4).contains(last),
        [4, 4, 4, 4, last] => (1..=3).contains(last),
        _ => false,
    }
}

fn prefix(d: &[u8], n: usize) -> u32 {
    d[..n]
        .iter()
        .fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
}

/// Whether `d` (ASCII digits) starts with a known IIN and has a length that
/// scheme issues.
pub(super) fn brand_ok(d: &[u8]) -> bool {
    let n = d.len();
    if !(14..=19).contains(&n) {
        return false;
    }
    let (p2, p3, p4) = (prefix(d, 2), prefix(d, 3), prefix(d, 4));
    let long = (16..=19).contains(&n);
    match d[0] {
        b'4' => n == 16 || n == 19,
        b'5' => match p2 {
            51..=55 => n == 16,
            50 | 56..=58 => long,
            _ => false,
        },
        b'2' => ((2221..=2720).contains(&p4) && n == 16) || ((2200..=2204).contains(&p4) && long),
        b'3' => match p2 {
            34 | 37 => n == 15,
            36 | 38 | 39 => true,
            30 => (300..=305).contains(&p3) || p4 == 3095,
            35 => (3528..=3589).contains(&p4) && long,
            _ => false,
        },
        b'6' => {
            (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || matches!(p2, 62 | 63 | 67))
                && long
        }
        _ => false,
    }
}

fn parse_run(b: &[u8], start: usize) -> Vec<Group> {
    let mut groups = vec![Group {
        start,
        end: start + digits_at(b, start),
        sep: Sep::First,
    }];
    loop {
        let q = groups[groups.len() - 1].end;
        let (sep, next) = match (space_at(b, q), b.get(q)) {
            (0, Some(b'-')) => (Sep::Hyphen, q + 1),
            (0, _) => break,
            (sp, _) => (Sep::Space, q + sp),
        };
        let n = digits_at(b, next);
        if n == 0 {
            break;
        }
        groups.push(Group {
            start: next,
            end: next + n,
            sep,
        });
    }
    groups
}

pub(super) fn find(text: &str, out: &mut Vec<Redaction>) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut digits = Vec::with_capacity(19);
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let groups = parse_run(b, i);
        let run_end = groups[groups.len() - 1].end;
        let mut a = 0;
        while a < groups.len() {
            // A card starts at the run's start (if that is a number boundary)
            // or right after a space inside the run.
            let start_ok = if a == 0 {
                left_ok(text, groups[0].start)
            } else {
                groups[a].sep == Sep::Space
            };
            let mut found = None;
            if start_ok {
                for z in (a + 1..=(a + 5).min(groups.len())).rev() {
                    let end_ok = if z == groups.len() {
                        right_ok(text, run_end)
                    } else {
                        groups[z].sep == Sep::Space
                    };
                    if !end_ok || !card_at(b, &groups[a..z], &mut digits) {
                        continue;
                    }
                    found = Some(z);
                    break;
                }
            }
            match found {
                Some(z) => {
                    out.push(Redaction {
                        kind: PiiKind::Card,
                        start: groups[a].start,
                        end: groups[z - 1].end,
                    });
                    a = z;
                }
                None => a += 1,
            }
        }
        i = run_end;
    }
}

fn card_at(b: &[u8], groups: &[Group], digits: &mut Vec<u8>) -> bool {
    // One kind of separator inside a number.
    if groups.len() > 2 && groups[2..].iter().any(|g| g.sep != groups[1].sep) {
        return false;
    }
    let mut lens = [0usize; 5];
    for (l, g) in lens.iter_mut().zip(groups) {
        *l = g.end - g.start;
    }
    if !layout_ok(&lens[..groups.len()]) {
        return false;
    }
    digits.clear();
    for g in groups {
        digits.extend_from_slice(&b[g.start..g.end]);
    }
    brand_ok(digits) && luhn_ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert!(layout_ok(&[16]));
        assert!(layout_ok(&[4, 4, 4, 4]));
        assert!(layout_ok(&[4, 6, 5]));
        assert!(layout_ok(&[4, 4, 4, 4, 3]));
        assert!(!layout_ok(&[4, 4, 2]));
        assert!(!layout_ok(&[3, 3, 4]));
        assert!(!layout_ok(&[12]));
        assert!(!layout_ok(&[20]));
    }

    #[test]
    fn brands() {
        assert!(brand_ok(b"4111111111111111"));
        assert!(!brand_ok(b"4222222222222")); // 13-digit Visa: deliberately not
        assert!(brand_ok(b"5555555555554444"));
        assert!(brand_ok(b"2223003122003222"));
        assert!(brand_ok(b"2720993122003222"));
        assert!(!brand_ok(b"2721993122003222"));
        assert!(brand_ok(b"378282246310005"));
        assert!(!brand_ok(b"3782822463100050"));
        assert!(brand_ok(b"6011111111111117"));
        assert!(brand_ok(b"30569309025904"));
        assert!(brand_ok(b"3530111333300000"));
        assert!(!brand_ok(b"1234567890123456"));
        assert!(!brand_ok(b"9111111111111111"));
    }
}
