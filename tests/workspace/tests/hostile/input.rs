//! Bad input: ids, names, homes, store rows, protocol frames.

use boxsock_core::id::IdErrorReason;
use boxsock_core::{BoxId, BoxLayout};
use boxsock_tests::reliability::Outcome;
use boxsock_tests::scenario;

scenario!(
    hostile_box_ids_are_refused_with_their_reason,
    "Bad input",
    "parse ids that try to escape or confuse the home: `..`, `../../etc`, `a/b`, NUL, newline, non-ASCII, 33 bytes, empty",
    {
        let cases: &[(&str, IdErrorReason)] = &[
            ("..", IdErrorReason::LeadingDot),
            ("../../etc", IdErrorReason::Slash),
            ("a/b", IdErrorReason::Slash),
            ("a\0b", IdErrorReason::Nul),
            ("a\nb", IdErrorReason::Whitespace),
            ("bøx", IdErrorReason::NonAscii),
            ("", IdErrorReason::Empty),
        ];
        let mut seen = Vec::new();
        for (input, reason) in cases {
            let err = BoxId::parse(input).expect_err(input);
            assert_eq!(err.reason, *reason, "{input:?}");
            assert!(err.to_string().contains("invalid box id"), "{err}");
            seen.push(format!("{:?}", err.reason));
        }
        let long = "a".repeat(BoxId::MAX_LEN + 1);
        assert_eq!(BoxId::parse(&long).unwrap_err().reason, IdErrorReason::TooLong);
        // Every id that is accepted is a single component below <home>/boxes.
        let l = BoxLayout::new("/h");
        for ok in ["a", "a.b", "A-_9", &"z".repeat(BoxId::MAX_LEN)] {
            let id = BoxId::parse(ok).unwrap();
            assert_eq!(l.box_dir(&id).parent(), Some(l.boxes_dir().as_path()));
        }
        Outcome::Passed(format!("each refused with its reason ({}, TooLong); accepted ids stay one component under <home>/boxes", seen.join(", ")))
    }
);
