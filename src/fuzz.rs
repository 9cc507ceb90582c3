//! Shared strategies of the fuzz targets: property tests (proptest) over the
//! parsers a client controls. Each target is a `mod fuzz` beside the code it
//! tests (`index::query`, `index::cursor`, `grpc::convert`, `grpc::report`,
//! `cli::import`, `cli::encoding`); `cargo test --lib fuzz` runs them all
//! (256 cases a property, `PROPTEST_CASES` for more) and `scripts/fuzz` runs
//! them for a bounded time. A failing case proptest finds is saved under
//! `proptest-regressions/` (beside the path of the source file) and replayed
//! first on every later run: keep those files in git.

use proptest::prelude::*;
use prost_types::Timestamp;

/// Characters that trip parsers up: mostly printable ASCII, then controls
/// (NUL included), C1, byte order marks and non-characters, combining marks,
/// bidi controls, line separators, astral characters, anything.
pub fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range(' ', '~'),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => proptest::char::range('\u{7f}', '\u{9f}'),
        2 => prop::sample::select(vec![
            '\u{a0}', '\u{ad}', '\u{300}', '\u{301}', '\u{130}', '\u{df}', '\u{e9}', '\u{fb01}',
            '\u{200b}', '\u{200d}', '\u{202e}', '\u{2028}', '\u{3000}', '\u{feff}', '\u{fffd}',
            '\u{fffe}', '\u{ffff}', '\u{20ac}', '\u{1f600}', '\u{10ffff}', '\u{5d0}', '\u{4e2d}',
        ]),
        1 => any::<char>(),
    ]
}

/// Up to `max` nasty characters.
pub fn nasty_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..=max).prop_map(|chars| chars.into_iter().collect())
}

/// A string of about `min..=max` bytes, built cheaply by repeating a short
/// nasty piece (cut at a character boundary, never under `min` bytes).
pub fn long_string(min: usize, max: usize) -> impl Strategy<Value = String> {
    let piece = prop::collection::vec(nasty_char(), 1..=6).prop_map(String::from_iter);
    (piece, min..=max).prop_map(|(piece, len)| {
        let mut text = piece.repeat(len / piece.len() + 1);
        let mut cut = len.min(text.len());
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.truncate(cut);
        text
    })
}

/// Short nasty strings, sometimes empty or blank, now and then long ones.
pub fn field_string(long_max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => nasty_string(24),
        1 => prop::sample::select(vec!["", " ", "\t\n", "\0", "\u{feff}"]).prop_map(String::from),
        1 => long_string(0, long_max),
    ]
}

/// Any i64, with the edges and the values near the service's limits often.
pub fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => any::<i64>(),
        2 => -20i64..20,
        1 => prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            i64::MAX / 1_000_000,
            i64::MAX / 1_000_000 + 1,
            i64::MIN / 1_000_000 - 1,
            7_258_118_400,
            7_258_118_399,
            -62_135_596_800,
            253_402_300_799,
        ]),
    ]
}

/// Any i32, mostly small (enum values, scores), sometimes extreme.
pub fn edgy_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => -3i32..16,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![i32::MIN, i32::MAX, -1, 0, 1_000_000_000]),
    ]
}

/// Floats with NaN, infinities, signed zero, subnormals and the edges of -1..1.
pub fn edgy_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -1.5f32..1.5,
        1 => any::<f32>(),
        1 => prop::sample::select(vec![
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            1.0,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
            f32::MIN,
            1.000_000_1,
            -1.000_000_1,
        ]),
    ]
}

/// Like `edgy_f32`, in f64.
pub fn edgy_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -2.0f64..2.0,
        1 => any::<f64>(),
        1 => prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e300,
        ]),
    ]
}

/// Timestamps anywhere: extreme seconds, negative or too large nanos.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    let nanos = prop_oneof![
        3 => 0i32..1_000_000_000,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![-1, 0, 999_999_999, 1_000_000_000, i32::MIN, i32::MAX]),
    ];
    let seconds = prop_oneof![3 => 0i64..7_300_000_000, 2 => edgy_i64()];
    (seconds, nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}
