//! Fuzzes the votes CSV parser (`pate privacy analyze --votes FILE`): any
//! text must give either a clear error or a rectangular matrix of
//! non-negative integer counts with at least two classes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rows) = pate_privacy::parse_votes_csv(text) {
        assert!(!rows.is_empty());
        let classes = rows[0].len();
        assert!(classes >= 2);
        for row in &rows {
            assert_eq!(row.len(), classes);
            assert!(row.iter().all(|v| *v >= 0.0 && v.fract() == 0.0 && *v <= f64::from(u32::MAX)));
        }
    }
});
