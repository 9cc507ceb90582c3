use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A feedback id: printable ASCII without whitespace, 1..=128 bytes.
/// Constructed only through validation (`FeedbackDraft::validate`) or
/// `FeedbackId::generate`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FeedbackId(String);

impl FeedbackId {
    /// A new ULID: 26 characters, sortable by creation time.
    pub fn generate() -> Self {
        FeedbackId(ulid::Ulid::new().to_string())
    }

    /// Checks the id rules; the error is a human-readable reason.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > super::limits::MAX_ID_BYTES {
            return Err(format!(
                "must be at most {} bytes, got {}",
                super::limits::MAX_ID_BYTES,
                raw.len()
            ));
        }
        if let Some(bad) = raw.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "must be printable ASCII without spaces, found {bad:?}"
            ));
        }
        Ok(FeedbackId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for FeedbackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMicros(since_epoch.as_micros() as i64)
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lower-case name used in the index, the query language and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where the feedback came from.
    Channel {
        Survey => "survey",
        Review => "review",
        SupportTicket => "support_ticket",
        Chat => "chat",
        Email => "email",
        Social => "social",
        CallTranscript => "call_transcript",
        Other => "other",
    }
}

string_enum! {
    /// The customer-journey stage the feedback refers to.
    JourneyStage {
        Research => "research",
        Comparison => "comparison",
        Purchase => "purchase",
        Onboarding => "onboarding",
        Usage => "usage",
        Support => "support",
        Renewal => "renewal",
        Other => "other",
    }
}

/// Rating scores; each optional and range-checked on the way in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scores {
    /// Net Promoter score, 0-10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps: Option<u8>,
    /// Customer satisfaction, 1-5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csat: Option<u8>,
    /// Customer effort score, 1-7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ces: Option<u8>,
    /// Star rating, 1-5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<u8>,
}

/// A validated feedback item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub id: FeedbackId,
    pub text: String,
    pub channel: Channel,
    pub journey_stage: JourneyStage,
    #[serde(default)]
    pub product: String,
    #[serde(default)]
    pub customer_id: String,
    pub created_at: UnixMicros,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub scores: Scores,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The text as sent, kept only when the tenant redacts PII and keeps
    /// originals (`text` then holds the redacted text). Read back only by
    /// an admin key that asks for it; erasure removes it with the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_text: Option<String>,
}

/// The item's fields by their API names (also the `--map` targets of
/// `verbatim import`); `attributes` entries are named `attributes.KEY`.
pub const FIELD_NAMES: [&str; 13] = [
    "id",
    "text",
    "channel",
    "journey_stage",
    "product",
    "customer_id",
    "created_at",
    "language",
    "nps",
    "csat",
    "ces",
    "rating",
    "tags",
];

/// A feedback item as the store keeps it: the item plus what the server
/// recorded about it. New server-side facts (analysis, themes, tenant) are
/// added here as optional fields, so older records keep decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredFeedback {
    pub feedback: Feedback,
    /// When this version was stored.
    pub ingested_at: UnixMicros,
    /// The store seq at which this version was written: unique per version,
    /// increasing, and unchanged when the analysis is attached later. The
    /// index's tie-breaker and the analysis queue's key.
    pub seq: u64,
    /// The NLP analysis of `feedback.text`; records written before analysis
    /// existed decode as pending.
    #[serde(default)]
    pub analysis: AnalysisState,
}

/// Where an item's analysis stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisState {
    /// Queued for the background analysis (or the server runs with analysis off).
    #[default]
    Pending,
    Done(super::Analysis),
    Failed {
        reason: String,
    },
}
