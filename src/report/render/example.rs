//! A realistic report for tests, demos and eyeballing the renderers: 26
//! weekly buckets, 8 themes (one a sub-theme), a channel matrix with
//! significant cells, two emerging themes and verbatims in several scripts,
//! one of them trying to inject a script.

use time::macros::datetime;

use crate::domain::{
    BucketSize, Change, EmergingTheme, Interval, MatrixCell, Period, Report, Score, SegmentColumn,
    SegmentMatrix, Span, ThemeRow, ThemeShare, TrendBucket, UnixMicros, Verbatim, VerbatimGroup,
};

const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;

fn micros(t: time::OffsetDateTime) -> UnixMicros {
    UnixMicros((t.unix_timestamp_nanos() / 1000) as i64)
}

/// The standard normal CDF (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// A score with a symmetric interval (clamped to `range`) and, when there
/// is a previous value, the change with a normal-approximation test.
fn score(
    n: u64,
    value: f64,
    half: f64,
    previous: Option<(u64, f64, f64)>,
    range: (f64, f64),
) -> Score {
    let estimate = (n > 0).then(|| Interval {
        value,
        low: (value - half).max(range.0),
        high: (value + half).min(range.1),
    });
    let change = match (estimate, previous) {
        (Some(_), Some((pn, p, p_half))) if pn > 0 => {
            let delta = value - p;
            let se = ((half / 1.96).powi(2) + (p_half / 1.96).powi(2)).sqrt();
            let p_value = 2.0 * (1.0 - phi((delta / se).abs()));
            Some(Change {
                delta,
                low: delta - 1.96 * se,
                high: delta + 1.96 * se,
                p_value,
                significant: p_value < 0.05,
            })
        }
        _ => None,
    };
    Score {
        n,
        estimate,
        previous_n: previous.map(|p| p.0).unwrap_or(0),
        previous: previous.filter(|p| p.0 > 0).map(|p| p.1),
        change,
    }
}

fn nps_half(n: u64) -> f64 {
    1.96 * 80.0 / (n.max(1) as f64).sqrt()
}

fn share_half(pct: f64, n: u64) -> f64 {
    let p = (pct / 100.0).clamp(0.0, 1.0);
    1.96 * (p * (1.0 - p) / n.max(1) as f64).sqrt() * 100.0
}

/// Net sentiment of `[neg, neu, pos, mixed]` counts and its 95% half width.
fn net(counts: [u64; 4]) -> (f64, f64, u64) {
    let total: u64 = counts.iter().sum();
    let t = total.max(1) as f64;
    let (neg, pos) = (counts[0] as f64 / t, counts[2] as f64 / t);
    let value = (pos - neg) * 100.0;
    let var = (pos + neg) - (pos - neg).powi(2);
    (value, 1.96 * (var / t).sqrt() * 100.0, total)
}

/// A deterministic wobble in [0, 1).
fn noise(i: usize, j: usize) -> f64 {
    let x = ((i * 7919 + j * 104_729 + 13) as f64).sin() * 43_758.545_3;
    x - x.floor()
}

/// Code-point span of `needle` in `text` (the fixture's texts contain it).
fn span(text: &str, needle: &str) -> Span {
    let byte = text.find(needle).expect("fixture highlight is in its text");
    let start = text[..byte].chars().count();
    Span {
        start,
        end: start + needle.chars().count(),
    }
}

#[allow(clippy::too_many_arguments)]
fn verbatim(
    item_id: &str,
    customer_id: &str,
    created_at: time::OffsetDateTime,
    channel: &str,
    text: &str,
    highlights: &[&str],
    sentiment: &str,
    nps: Option<i32>,
) -> Verbatim {
    Verbatim {
        item_id: item_id.into(),
        customer_id: customer_id.into(),
        created_at: micros(created_at),
        channel: channel.into(),
        text: text.into(),
        highlights: highlights.iter().map(|h| span(text, h)).collect(),
        sentiment: sentiment.into(),
        nps,
    }
}

struct ThemeSpec {
    id: &'static str,
    name: &'static str,
    parent: &'static str,
    mentions: u64,
    previous_mentions: u64,
    sentiment: [u64; 4],
    previous_net: f64,
    nps: (f64, u64),
    previous_nps: (f64, u64),
    nps_impact: (f64, f64),
    csat: (f64, u64),
    previous_csat: f64,
    csat_impact: (f64, f64),
}

const THEMES: [ThemeSpec; 8] = [
    ThemeSpec {
        id: "delivery_delay",
        name: "Delivery delay",
        parent: "delivery",
        mentions: 642,
        previous_mentions: 431,
        sentiment: [452, 96, 38, 56],
        previous_net: -55.0,
        nps: (-41.8, 171),
        previous_nps: (-33.0, 122),
        nps_impact: (-6.8, 1.9),
        csat: (52.1, 140),
        previous_csat: 58.0,
        csat_impact: (-4.9, 1.8),
    },
    ThemeSpec {
        id: "reliability_and_bugs",
        name: "Reliability and bugs",
        parent: "",
        mentions: 388,
        previous_mentions: 190,
        sentiment: [281, 62, 25, 20],
        previous_net: -60.0,
        nps: (-35.2, 97),
        previous_nps: (-30.1, 49),
        nps_impact: (-3.9, 1.4),
        csat: (55.3, 85),
        previous_csat: 57.0,
        csat_impact: (-2.4, 1.3),
    },
    ThemeSpec {
        id: "returns_and_refunds",
        name: "Returns and refunds",
        parent: "",
        mentions: 604,
        previous_mentions: 590,
        sentiment: [330, 150, 84, 40],
        previous_net: -42.0,
        nps: (-18.6, 160),
        previous_nps: (-22.4, 158),
        nps_impact: (-3.1, 1.6),
        csat: (64.0, 120),
        previous_csat: 61.2,
        csat_impact: (-1.7, 1.5),
    },
    ThemeSpec {
        id: "delivery",
        name: "Delivery",
        parent: "",
        mentions: 1030,
        previous_mentions: 905,
        sentiment: [560, 230, 180, 60],
        previous_net: -38.0,
        nps: (-12.5, 270),
        previous_nps: (-10.1, 240),
        nps_impact: (-2.6, 1.9),
        csat: (70.2, 210),
        previous_csat: 68.5,
        csat_impact: (-1.1, 1.6),
    },
    ThemeSpec {
        id: "price_and_value",
        name: "Price and value",
        parent: "",
        mentions: 455,
        previous_mentions: 472,
        sentiment: [190, 140, 95, 30],
        previous_net: -20.0,
        nps: (4.1, 118),
        previous_nps: (2.9, 125),
        nps_impact: (-0.9, 1.5),
        csat: (73.0, 90),
        previous_csat: 72.2,
        csat_impact: (-0.6, 1.4),
    },
    ThemeSpec {
        id: "billing_and_payment",
        name: "Billing & payment",
        parent: "",
        mentions: 210,
        previous_mentions: 88,
        sentiment: [98, 60, 38, 14],
        previous_net: -35.0,
        nps: (2.0, 51),
        previous_nps: (6.0, 24),
        nps_impact: (-0.4, 1.1),
        csat: (71.0, 44),
        previous_csat: 74.0,
        csat_impact: (-0.2, 1.0),
    },
    ThemeSpec {
        id: "product_quality",
        name: "Product quality",
        parent: "",
        mentions: 690,
        previous_mentions: 702,
        sentiment: [150, 160, 330, 50],
        previous_net: 22.0,
        nps: (31.6, 190),
        previous_nps: (27.4, 199),
        nps_impact: (2.2, 1.4),
        csat: (88.0, 150),
        previous_csat: 85.1,
        csat_impact: (1.5, 1.2),
    },
    ThemeSpec {
        id: "staff_attitude",
        name: "Staff attitude",
        parent: "",
        mentions: 733,
        previous_mentions: 690,
        sentiment: [90, 120, 470, 53],
        previous_net: 45.0,
        nps: (48.2, 205),
        previous_nps: (41.0, 188),
        nps_impact: (4.6, 1.5),
        csat: (91.5, 170),
        previous_csat: 89.0,
        csat_impact: (2.1, 1.1),
    },
];

/// Channel, items, net sentiment.
const CHANNELS: [(&str, u64, f64); 7] = [
    ("survey", 1480, -2.1),
    ("email", 1120, -12.4),
    ("chat", 860, 6.3),
    ("review", 640, -8.8),
    ("support_ticket", 410, -19.5),
    ("social", 190, -15.0),
    ("call_transcript", 112, -3.2),
];

/// Significant cells: theme, channel, share multiplier, direction, p.
const SIGNIFICANT: [(&str, &str, f64, i32, f64); 7] = [
    ("delivery_delay", "email", 1.7, 1, 0.0004),
    ("delivery_delay", "survey", 0.62, -1, 0.012),
    ("reliability_and_bugs", "review", 2.3, 1, 0.000_01),
    ("reliability_and_bugs", "support_ticket", 1.9, 1, 0.003),
    ("returns_and_refunds", "support_ticket", 2.1, 1, 0.0001),
    ("staff_attitude", "chat", 1.6, 1, 0.002),
    ("product_quality", "review", 1.5, 1, 0.03),
];

const ITEMS: u64 = 4812;
const PREVIOUS_ITEMS: u64 = 4530;

pub(super) fn report() -> Report {
    let start = micros(datetime!(2025-07-07 0:00 UTC));
    let end = micros(datetime!(2026-01-05 0:00 UTC));
    let comparison_start = micros(datetime!(2025-01-06 0:00 UTC));

    let themes: Vec<ThemeRow> = THEMES
        .iter()
        .map(|t| {
            let (net_value, net_half, labelled) = net(t.sentiment);
            let previous_labelled = t.previous_mentions * 95 / 100;
            ThemeRow {
                theme_id: t.id.into(),
                name: t.name.into(),
                parent_id: t.parent.into(),
                mentions: t.mentions,
                share: t.mentions as f64 / ITEMS as f64,
                previous_mentions: t.previous_mentions,
                previous_share: t.previous_mentions as f64 / PREVIOUS_ITEMS as f64,
                sentiment: t.sentiment,
                net_sentiment: score(
                    labelled,
                    net_value,
                    net_half,
                    Some((previous_labelled, t.previous_net, net_half * 1.1)),
                    (-100.0, 100.0),
                ),
                nps: score(
                    t.nps.1,
                    t.nps.0,
                    nps_half(t.nps.1),
                    Some((
                        t.previous_nps.1,
                        t.previous_nps.0,
                        nps_half(t.previous_nps.1),
                    )),
                    (-100.0, 100.0),
                ),
                nps_impact: Some(Interval {
                    value: t.nps_impact.0,
                    low: t.nps_impact.0 - t.nps_impact.1,
                    high: t.nps_impact.0 + t.nps_impact.1,
                }),
                csat: score(
                    t.csat.1,
                    t.csat.0,
                    share_half(t.csat.0, t.csat.1),
                    Some((
                        t.csat.1 * 9 / 10,
                        t.previous_csat,
                        share_half(t.previous_csat, t.csat.1 * 9 / 10),
                    )),
                    (0.0, 100.0),
                ),
                csat_impact: Some(Interval {
                    value: t.csat_impact.0,
                    low: t.csat_impact.0 - t.csat_impact.1,
                    high: t.csat_impact.0 + t.csat_impact.1,
                }),
            }
        })
        .collect();

    let mut cells = Vec::new();
    for (i, theme) in themes.iter().enumerate() {
        for (j, (channel, items, channel_net)) in CHANNELS.iter().enumerate() {
            let special = SIGNIFICANT
                .iter()
                .find(|s| s.0 == theme.theme_id && s.1 == *channel);
            let multiplier = special.map(|s| s.2).unwrap_or(0.85 + 0.3 * noise(i, j));
            let mentions = (theme.share * multiplier * *items as f64).round() as u64;
            let theme_net = theme.net_sentiment.estimate.map(|e| e.value).unwrap_or(0.0);
            cells.push(MatrixCell {
                theme_id: theme.theme_id.clone(),
                segment_value: channel.to_string(),
                mentions,
                share: mentions as f64 / *items as f64,
                net_sentiment: (mentions > 0).then(|| {
                    (theme_net + channel_net * 0.5 + 8.0 * (noise(j, i) - 0.5)).clamp(-100.0, 100.0)
                }),
                p_value: special.map(|s| s.4).unwrap_or(0.2 + 0.8 * noise(i + 31, j)),
                significant: special.is_some(),
                direction: special.map(|s| s.3).unwrap_or(0),
            });
        }
    }
    let matrix = SegmentMatrix {
        field: "channel".into(),
        columns: CHANNELS
            .iter()
            .map(|(value, items, net_sentiment)| SegmentColumn {
                value: value.to_string(),
                items: *items,
                net_sentiment: Some(*net_sentiment),
            })
            .collect(),
        cells,
    };

    let trend_themes: Vec<String> = [
        "delivery",
        "delivery_delay",
        "reliability_and_bugs",
        "returns_and_refunds",
        "staff_attitude",
        "product_quality",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let weeks = 26usize;
    let mut volumes: Vec<u64> = (0..weeks)
        .map(|i| {
            let holiday = if i >= 24 { 0.55 } else { 1.0 };
            ((180.0 + 24.0 * (i as f64 * 0.7).sin() + i as f64 * 1.1) * holiday).round() as u64
        })
        .collect();
    let assigned: u64 = volumes[..weeks - 1].iter().sum();
    volumes[weeks - 1] = ITEMS.saturating_sub(assigned).max(60);
    let trends: Vec<TrendBucket> = volumes
        .iter()
        .enumerate()
        .map(|(i, &items)| {
            let analysed = items * 98 / 100;
            let net_value = -8.0 + 0.28 * i as f64 + 4.5 * (i as f64 * 1.3).sin();
            let nps_n = if i == 24 { 0 } else { items / 4 };
            let nps_value = 7.5 + 0.32 * i as f64 + 6.0 * (i as f64 * 0.9).sin();
            TrendBucket {
                start: UnixMicros(start.0 + i as i64 * WEEK_MICROS),
                end: UnixMicros(start.0 + (i as i64 + 1) * WEEK_MICROS),
                items,
                net_sentiment: score(
                    analysed,
                    net_value,
                    1.96 * 75.0 / (analysed.max(1) as f64).sqrt(),
                    None,
                    (-100.0, 100.0),
                ),
                nps: score(nps_n, nps_value, nps_half(nps_n), None, (-100.0, 100.0)),
                themes: trend_themes
                    .iter()
                    .enumerate()
                    .map(|(k, id)| {
                        let base = themes
                            .iter()
                            .find(|t| &t.theme_id == id)
                            .map(|t| t.share)
                            .unwrap_or(0.0);
                        let rising = if id == "reliability_and_bugs" {
                            0.4 + 1.2 * i as f64 / weeks as f64
                        } else {
                            0.9 + 0.2 * noise(i, k)
                        };
                        let mentions = (base * rising * items as f64).round() as u64;
                        ThemeShare {
                            theme_id: id.clone(),
                            mentions,
                            share: mentions as f64 / items.max(1) as f64,
                        }
                    })
                    .collect(),
            }
        })
        .collect();

    let emerging = vec![
        EmergingTheme {
            theme_id: "reliability_and_bugs".into(),
            name: "Reliability and bugs".into(),
            mentions: 388,
            share: 388.0 / ITEMS as f64,
            previous_mentions: 190,
            previous_share: 190.0 / PREVIOUS_ITEMS as f64,
            p_value: 2.1e-14,
            adjusted_p_value: 1.7e-13,
            candidate: false,
            representatives: Vec::new(),
        },
        EmergingTheme {
            theme_id: "billing_and_payment".into(),
            name: "Billing & payment".into(),
            mentions: 210,
            share: 210.0 / ITEMS as f64,
            previous_mentions: 88,
            previous_share: 88.0 / PREVIOUS_ITEMS as f64,
            p_value: 6.0e-11,
            adjusted_p_value: 4.2e-10,
            candidate: false,
            representatives: Vec::new(),
        },
        EmergingTheme {
            theme_id: "candidate-1".into(),
            name: "parking / car park".into(),
            mentions: 41,
            share: 41.0 / 2_000.0,
            previous_mentions: 9,
            previous_share: 9.0 / 2_000.0,
            p_value: 1.1e-6,
            adjusted_p_value: 2.0e-5,
            candidate: true,
            representatives: vec![
                "The car park was full again, we drove around for 20 minutes.".into(),
                "No parking anywhere near the store.".into(),
            ],
        },
    ];

    let delay_en = "Ordered on the 3rd, the parcel only arrived on the 24th. Nobody told me it would be three weeks late. The product itself is fine.";
    let delay_fr = "La livraison a pris trois semaines, très décevant. Le produit est de bonne qualité, rien à redire.";
    let delay_ja =
        "配達が二週間も遅れました。日本からの注文は毎回こうです。商品自体は満足しています。";
    let crash =
        "The app crashes every time I open the cart 😡 — had to order from the website instead.";
    let logout = "Since the last update the app logs me out constantly. Otherwise a great shop!";
    let script = "<script>alert(1)</script> Where is my refund?? I returned the parcel on 3 Nov & still nothing.";
    let url = "Tried the help page at https://example.com/help?topic=refunds&lang=en but it says nothing about store credit.";
    let staff = "Jana on the chat was incredibly patient and sorted out my order in five minutes. Thank you!";
    let email =
        "Third email asking where my order is.\nThe tracking page hasn't changed in ten days.";
    let freeze =
        "Two stars: the app keeps freezing on the payment screen, \"try again later\" every time.";
    let verbatims = vec![
        VerbatimGroup {
            theme_id: "delivery_delay".into(),
            segment_value: String::new(),
            verbatims: vec![
                verbatim(
                    "fb-20417",
                    "c-8812",
                    datetime!(2025-11-03 9:12 UTC),
                    "email",
                    delay_en,
                    &["Ordered on the 3rd, the parcel only arrived on the 24th. Nobody told me it would be three weeks late."],
                    "negative",
                    Some(2),
                ),
                verbatim(
                    "fb-18840",
                    "c-1307",
                    datetime!(2025-10-14 17:40 UTC),
                    "survey",
                    delay_fr,
                    &["La livraison a pris trois semaines, très décevant."],
                    "negative",
                    Some(4),
                ),
                verbatim(
                    "fb-21902",
                    "c-5521",
                    datetime!(2025-12-01 3:05 UTC),
                    "review",
                    delay_ja,
                    &["配達が二週間も遅れました。", "日本からの注文は毎回こうです。"],
                    "negative",
                    None,
                ),
            ],
        },
        VerbatimGroup {
            theme_id: "reliability_and_bugs".into(),
            segment_value: String::new(),
            verbatims: vec![
                verbatim(
                    "fb-22310",
                    "c-0934",
                    datetime!(2025-12-09 20:31 UTC),
                    "review",
                    crash,
                    &["The app crashes every time I open the cart 😡"],
                    "negative",
                    Some(0),
                ),
                verbatim(
                    "fb-19377",
                    "c-4410",
                    datetime!(2025-10-28 11:02 UTC),
                    "survey",
                    logout,
                    &["Since the last update the app logs me out constantly."],
                    "mixed",
                    Some(6),
                ),
            ],
        },
        VerbatimGroup {
            theme_id: "returns_and_refunds".into(),
            segment_value: String::new(),
            verbatims: vec![
                verbatim(
                    "fb-20981",
                    "c-7720",
                    datetime!(2025-11-19 8:47 UTC),
                    "support_ticket",
                    script,
                    &["Where is my refund?? I returned the parcel on 3 Nov & still nothing."],
                    "negative",
                    None,
                ),
                verbatim(
                    "fb-17702",
                    "c-2291",
                    datetime!(2025-09-30 14:15 UTC),
                    "chat",
                    url,
                    &[url],
                    "neutral",
                    Some(7),
                ),
            ],
        },
        VerbatimGroup {
            theme_id: "staff_attitude".into(),
            segment_value: String::new(),
            verbatims: vec![verbatim(
                "fb-16035",
                "c-6603",
                datetime!(2025-08-21 10:20 UTC),
                "chat",
                staff,
                &["Jana on the chat was incredibly patient and sorted out my order in five minutes."],
                "positive",
                Some(10),
            )],
        },
        VerbatimGroup {
            theme_id: "delivery_delay".into(),
            segment_value: "email".into(),
            verbatims: vec![verbatim(
                "fb-21377",
                "c-3148",
                datetime!(2025-11-24 7:58 UTC),
                "email",
                email,
                &["Third email asking where my order is.", "The tracking page hasn't changed in ten days."],
                "negative",
                Some(1),
            )],
        },
        VerbatimGroup {
            theme_id: "reliability_and_bugs".into(),
            segment_value: "review".into(),
            verbatims: vec![verbatim(
                "fb-22871",
                "c-9006",
                datetime!(2025-12-15 16:44 UTC),
                "review",
                freeze,
                &["the app keeps freezing on the payment screen"],
                "negative",
                None,
            )],
        },
    ];

    Report {
        period: Period { start, end },
        comparison: Period {
            start: comparison_start,
            end: start,
        },
        bucket: BucketSize::Week,
        taxonomy_version: 3,
        retag_pending: 37,
        items: ITEMS,
        previous_items: PREVIOUS_ITEMS,
        analysed: 4705,
        sentiment: [1620, 1410, 1395, 280],
        net_sentiment: score(
            4705,
            (1395.0 - 1620.0) / 4705.0 * 100.0,
            2.6,
            Some((4410, -7.9, 2.7)),
            (-100.0, 100.0),
        ),
        nps: score(
            1204,
            12.3,
            nps_half(1204),
            Some((1151, 9.1, nps_half(1151))),
            (-100.0, 100.0),
        ),
        csat: score(
            918,
            78.4,
            share_half(78.4, 918),
            Some((874, 73.9, share_half(73.9, 874))),
            (0.0, 100.0),
        ),
        ces: score(862, 5.2, 0.09, Some((811, 5.1, 0.1)), (1.0, 7.0)),
        themes,
        matrix: Some(matrix),
        trend_themes,
        trends,
        emerging,
        verbatims,
    }
}
