//! Each demo language's number words, month names and dates against tables typed out by hand.

mod demo_tables;

use flix_demo::{all_languages, language, Date, MAX_NUMBER};

#[test]
fn number_words_match_the_hand_written_tables() {
    for (code, _) in demo_tables::NUMBER_WORDS {
        let lang = language(code).unwrap_or_else(|| panic!("language {code} missing"));
        let table = demo_tables::number_words(code);
        assert!(
            table.len() >= 55,
            "{code}: table too short ({})",
            table.len()
        );
        for (n, expected) in table {
            let found = lang.number(n);
            assert_eq!(
                found.as_deref(),
                Some(expected.as_str()),
                "{code}: number {n}"
            );
        }
    }
}

#[test]
fn every_language_has_a_table_and_distinct_words_for_0_to_99() {
    for lang in all_languages() {
        let code = lang.code();
        assert!(
            demo_tables::NUMBER_WORDS.iter().any(|(c, _)| *c == code),
            "{code} has no table"
        );
        let mut words: Vec<String> = (0..=MAX_NUMBER)
            .map(|n| {
                lang.number(n)
                    .unwrap_or_else(|| panic!("{code}: no words for {n}"))
            })
            .collect();
        assert!(
            words.iter().all(|w| !w.is_empty() && w.trim() == w),
            "{code}: blank or padded"
        );
        words.sort();
        words.dedup();
        assert_eq!(words.len(), 100, "{code}: two numbers share their words");
        assert_eq!(
            lang.number(MAX_NUMBER + 1),
            None,
            "{code}: 100 is out of range"
        );
    }
}

#[test]
fn month_names_match_the_hand_written_tables() {
    for (code, _) in demo_tables::MONTHS {
        let lang = language(code).unwrap_or_else(|| panic!("language {code} missing"));
        let expected = demo_tables::month_names(code);
        assert_eq!(expected.len(), 12);
        for (i, name) in expected.iter().enumerate() {
            assert_eq!(
                lang.month(i as u32 + 1),
                Some(*name),
                "{code}: month {}",
                i + 1
            );
        }
        assert_eq!(lang.month(0), None);
        assert_eq!(lang.month(13), None);
    }
}

#[test]
fn dates_match_the_hand_written_tables() {
    let march = Date::new(2024, 3, 5).expect("valid date");
    let august_first = Date::new(1999, 8, 1).expect("valid date");
    for (code, expected_march, expected_august) in demo_tables::DATES {
        let lang = language(code).unwrap_or_else(|| panic!("language {code} missing"));
        assert_eq!(lang.date(march), expected_march, "{code}");
        assert_eq!(lang.date(august_first), expected_august, "{code}");
    }
}

#[test]
fn sentences_contain_the_tables_words() {
    for (code, _) in demo_tables::NUMBER_WORDS {
        let lang = language(code).unwrap_or_else(|| panic!("language {code} missing"));
        for (n, words) in demo_tables::number_words(code) {
            let sentence = lang.number_sentence(n).expect("in range");
            assert!(sentence.contains(&format!(" {n} ")), "{code}: {sentence}");
            assert!(
                sentence.ends_with(&format!(" {words}.")),
                "{code}: {sentence}"
            );
        }
        let months = demo_tables::month_names(code);
        for (i, name) in months.iter().enumerate() {
            let month = i as u32 + 1;
            let order = lang
                .month_order_sentence(month)
                .expect("in range")
                .to_lowercase();
            let number = lang.month_number_sentence(month).expect("in range");
            assert!(order.contains(&name.to_lowercase()), "{code}: {order}");
            assert!(
                number.contains(name) && number.contains(&month.to_string()),
                "{code}: {number}"
            );
        }
        assert_eq!(lang.month_order_sentence(13), None);
    }
}
