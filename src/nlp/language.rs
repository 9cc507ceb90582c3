//! Language detection (whatlang: trigram statistics, 69 languages, pure Rust).

/// ISO 639-1 code where one exists (else whatlang's ISO 639-3), and the
/// detector's confidence; "und" (undetermined) when it has no answer or is
/// unsure on a very short text.
pub fn detect(text: &str) -> (String, f32) {
    match whatlang::detect(text) {
        Some(info) if info.confidence() >= 0.3 || info.is_reliable() => {
            let code = info.lang().code();
            (
                iso_639_1(code).unwrap_or(code).to_string(),
                info.confidence() as f32,
            )
        }
        Some(info) => ("und".to_string(), info.confidence() as f32),
        None => ("und".to_string(), 0.0),
    }
}

fn iso_639_1(code: &str) -> Option<&'static str> {
    Some(match code {
        "eng" => "en",
        "deu" => "de",
        "fra" => "fr",
        "spa" => "es",
        "por" => "pt",
        "ita" => "it",
        "nld" => "nl",
        "rus" => "ru",
        "ukr" => "uk",
        "pol" => "pl",
        "ces" => "cs",
        "swe" => "sv",
        "dan" => "da",
        "nob" => "nb",
        "fin" => "fi",
        "tur" => "tr",
        "ara" => "ar",
        "heb" => "he",
        "hin" => "hi",
        "ben" => "bn",
        "cmn" => "zh",
        "jpn" => "ja",
        "kor" => "ko",
        "vie" => "vi",
        "tha" => "th",
        "ind" => "id",
        "ell" => "el",
        "hun" => "hu",
        "ron" => "ro",
        "bul" => "bg",
        "hrv" => "hr",
        "srp" => "sr",
        "slk" => "sk",
        "slv" => "sl",
        "lit" => "lt",
        "lav" => "lv",
        "est" => "et",
        "pes" => "fa",
        "urd" => "ur",
        "tam" => "ta",
        "tel" => "te",
        "mar" => "mr",
        "cat" => "ca",
        "epo" => "eo",
        "afr" => "af",
        "lat" => "la",
        "zul" => "zu",
        "aka" => "ak",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_common_languages() {
        assert_eq!(
            super::detect("The delivery was late and nobody answered my emails.").0,
            "en"
        );
        assert_eq!(
            super::detect("Die Lieferung kam viel zu spät und niemand hat geantwortet.").0,
            "de"
        );
        assert_eq!(
            super::detect("La livraison est arrivée en retard et personne ne répond.").0,
            "fr"
        );
        assert_eq!(super::detect("😀😀").0, "und");
    }
}
