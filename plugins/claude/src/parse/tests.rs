//! The parser over transcripts recorded from the real CLI (see tests/fixtures/README.md)
//! and over edge cases the CLI produces rarely.

use super::*;

fn transcript(text: &str) -> (Parser, Vec<Event>) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    for line in text.lines() {
        parser.feed(line, &mut events);
    }
    (parser, events)
}

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/", $name, ".jsonl"))
    };
}

fn no_warnings(events: &[Event]) {
    for e in events {
        assert!(!matches!(e, Event::Warning(_)), "unexpected warning {e:?}");
    }
}

#[test]
fn plain_run_gives_init_thinking_message_usage_and_a_successful_outcome() {
    let (parser, events) = transcript(fixture!("plain"));
    no_warnings(&events);
    let Event::Init {
        session_id,
        model,
        cwd,
        tools,
        version,
    } = &events[0]
    else {
        panic!("first event {:?}", events[0]);
    };
    assert_eq!(version.as_deref(), Some("2.1.331"));
    assert!(model.is_some() && cwd.is_some());
    assert!(tools.iter().any(|t| t == "Bash"));
    assert!(events.contains(&Event::Thinking {
        text: "The user greets me.".into(),
        partial: false
    }));
    assert!(events.contains(&Event::Message {
        text: "Hello from the fake".into(),
        partial: false
    }));
    let usage = events.iter().find_map(|e| match e {
        Event::Usage { usage, cost_usd } => Some((*usage, *cost_usd)),
        _ => None,
    });
    let (usage, cost) = usage.expect("a usage event");
    assert!(usage.output_tokens > 0 && cost.unwrap() > 0.0);
    let outcome = parser.outcome().unwrap();
    assert_eq!(outcome.subtype, "success");
    assert!(!outcome.is_error);
    assert_eq!(outcome.result.as_deref(), Some("Hello from the fake"));
    assert_eq!(outcome.session_id.as_deref(), session_id.as_deref());
    assert_eq!(outcome.num_turns, Some(1));
    assert!(outcome.duration_ms.is_some());
    assert!(outcome.details.contains_key("permission_denials"));
    assert!(!outcome.details.contains_key("result"));
}

#[test]
fn resumed_run_keeps_the_session() {
    let (first, _) = transcript(fixture!("plain"));
    let (second, events) = transcript(fixture!("resume"));
    no_warnings(&events);
    assert_eq!(second.session_id(), first.session_id());
    assert_eq!(
        second.outcome().unwrap().result.as_deref(),
        Some("Second answer")
    );
}

#[test]
fn tool_round_trip_gives_tool_use_and_tool_result() {
    let (parser, events) = transcript(fixture!("tool"));
    no_warnings(&events);
    let tool_use = events
        .iter()
        .find_map(|e| match e {
            Event::ToolUse {
                id,
                name,
                input_json,
            } => Some((id, name, input_json)),
            _ => None,
        })
        .unwrap();
    assert_eq!(tool_use.0, "toolu_fake_1");
    assert_eq!(tool_use.1, "Bash");
    let input: serde_json::Value = serde_json::from_str(tool_use.2).unwrap();
    assert_eq!(input["command"], "echo tool-ran-$((40+2))");
    assert!(events.contains(&Event::ToolResult {
        id: "toolu_fake_1".into(),
        content: "tool-ran-42".into(),
        is_error: false
    }));
    assert!(!parser.outcome().unwrap().is_error);
}

#[test]
fn partial_messages_give_deltas_then_the_full_message() {
    let (_, events) = transcript(fixture!("partial"));
    no_warnings(&events);
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                text,
                partial: true,
            } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["one ", "two ", "three"]);
    assert!(events.contains(&Event::Message {
        text: "one two three".into(),
        partial: false
    }));
    // Framing events are dropped, not passed through raw.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Raw { kind, .. } if kind == "stream_event"))
    );
}

#[test]
fn api_500_gives_retry_warnings_a_synthetic_error_and_a_failed_outcome() {
    let (parser, events) = transcript(fixture!("api_500"));
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Warning(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 2, "{events:?}");
    assert_eq!(
        warnings[0].as_str(),
        "API request failed (HTTP 500, server_error); retry 1 of 2 in 0.54 s"
    );
    assert!(
        warnings[1].ends_with("retry 2 of 2 in 1.06 s"),
        "{warnings:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Message { .. })),
        "the synthetic API error is not the model's message"
    );
    let outcome = parser.outcome().unwrap();
    assert!(outcome.is_error);
    assert!(outcome.error_message().contains("fake internal failure"));
    let errors: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Error(_)))
        .collect();
    assert_eq!(errors.len(), 1, "one error event per error: {errors:?}");
    assert!(
        matches!(errors[0], Event::Error(text) if text.contains("API Error: 500 fake internal failure"))
    );
}

#[test]
fn api_401_fails_with_the_cli_message() {
    let (parser, _) = transcript(fixture!("api_401"));
    let outcome = parser.outcome().unwrap();
    assert!(outcome.is_error);
    assert!(outcome.error_message().contains("Invalid API key"));
    assert_eq!(outcome.details["api_error_status"], 401);
}

#[test]
fn interrupted_run_ends_aborted_with_the_session() {
    let (parser, events) = transcript(fixture!("interrupted"));
    no_warnings(&events);
    let outcome = parser.outcome().unwrap();
    assert!(outcome.is_error);
    assert_eq!(outcome.details["terminal_reason"], "aborted_streaming");
    assert!(parser.session_id().is_some());
    // The CLI's internal note stays in the details, out of the events and the error.
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(
        outcome.details["diagnostics"][0]
            .as_str()
            .is_some_and(|d| d.starts_with("[ede_diagnostic]"))
    );
    assert!(!outcome.error_message().contains("ede_diagnostic"));
    let shown = format!("{events:?}");
    assert!(!shown.contains("ede_diagnostic"), "{shown}");
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))));
    // "[Request interrupted by user]" is the CLI's own note, passed through raw.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Raw { kind, json } if kind == "user.text" && json.contains("interrupted")))
    );
}

#[test]
fn interrupted_run_without_its_result_line_keeps_the_session() {
    // The CLI sometimes exits on SIGINT before writing its result line.
    let cut: String = fixture!("interrupted")
        .lines()
        .filter(|l| !l.contains(r#""type":"result""#))
        .map(|l| format!("{l}\n"))
        .collect();
    let (parser, events) = transcript(&cut);
    no_warnings(&events);
    assert!(parser.outcome().is_none());
    assert!(parser.session_id().is_some());
}

#[test]
fn unknown_resume_session_fails_with_the_cli_message() {
    let (parser, _) = transcript(fixture!("resume_unknown"));
    let outcome = parser.outcome().unwrap();
    assert!(outcome.is_error);
    assert_eq!(
        outcome.error_message(),
        "No conversation found with session ID: 00000000-0000-4000-8000-000000000000"
    );
}

#[test]
fn malformed_and_unknown_lines_never_crash() {
    let (parser, events) = transcript(
        "{not json\n\n[1,2]\n{\"type\":\"future_thing\",\"x\":1}\n{\"no_type\":true}\n\
         {\"type\":\"system\",\"subtype\":\"compact_boundary\"}\n\
         {\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"redacted_thinking\"}]}}\n\
         {\"type\":\"assistant\"}\n{\"type\":\"user\",\"message\":{\"content\":\"plain\"}}\n\
         {\"type\":\"stream_event\"}\n{\"type\":\"result\"}\n",
    );
    assert!(matches!(&events[0], Event::Warning(w) if w.contains("unparseable")));
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Raw { kind, .. } => Some(kind.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "unknown",
            "future_thing",
            "unknown",
            "system.compact_boundary",
            "assistant.redacted_thinking",
            "assistant",
            "user",
            "stream_event"
        ]
    );
    let outcome = parser.outcome().unwrap();
    assert_eq!(outcome.subtype, "unknown");
    assert!(!outcome.is_error);
}

#[test]
fn warning_quotes_only_an_excerpt_of_a_huge_malformed_line() {
    let line = "x".repeat(2 * 1024 * 1024);
    let (_, events) = transcript(&line);
    let Event::Warning(w) = &events[0] else {
        panic!()
    };
    assert!(w.len() < 1_000, "{}", w.len());
}

#[test]
fn tool_result_blocks_and_errors() {
    let (_, events) = transcript(
        r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":[{"type":"text","text":"a"},{"type":"text","text":"b"},{"type":"image","source":{}}]}]}}"#,
    );
    let Event::ToolResult {
        id,
        content,
        is_error,
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!(id, "t1");
    assert!(is_error);
    assert!(content.starts_with("a\nb\n{"));
}

#[test]
fn a_line_over_a_megabyte_split_in_pieces_is_reassembled() {
    let big = "y".repeat(3 * 1024 * 1024);
    let line =
        serde_json::json!({"type":"assistant","message":{"content":[{"type":"text","text":big}]}})
            .to_string();
    let mut joiner = LineJoiner::new(64 * 1024 * 1024);
    let pieces: Vec<&str> = {
        let (a, rest) = line.split_at(1024 * 1024);
        let (b, c) = rest.split_at(1024 * 1024);
        vec![a, b, c]
    };
    assert_eq!(joiner.push(pieces[0].into(), true), Joined::Pending);
    assert_eq!(joiner.push(pieces[1].into(), true), Joined::Pending);
    let Joined::Line(joined) = joiner.push(pieces[2].into(), false) else {
        panic!()
    };
    let mut parser = Parser::new();
    let mut events = Vec::new();
    parser.feed(&joined, &mut events);
    assert!(matches!(&events[0], Event::Message { text, .. } if text.len() == big.len()));
    // The next line is independent of the long one.
    assert_eq!(
        joiner.push("next".into(), false),
        Joined::Line("next".into())
    );
}

#[test]
fn a_line_over_the_limit_is_dropped_and_reported() {
    let mut joiner = LineJoiner::new(10);
    assert_eq!(joiner.push("12345678".into(), true), Joined::Pending);
    assert_eq!(joiner.push("12345678".into(), true), Joined::Pending);
    assert_eq!(joiner.push("123".into(), false), Joined::TooLong(19));
    assert_eq!(joiner.push("ok".into(), false), Joined::Line("ok".into()));
    assert_eq!(joiner.push("tail".into(), true), Joined::Pending);
    assert_eq!(joiner.finish(), Some("tail".into()));
}

#[test]
fn a_permission_denial_is_a_warning_and_stays_in_the_outcome() {
    let line =
        r#"{"type":"result","subtype":"success","is_error":false,"result":"I could not run it.",
        "session_id":"s-1","permission_denials":[{"tool_name":"Bash","tool_use_id":"toolu_1",
        "tool_input":{"command":"rm -rf build","description":"clean"}}]}"#
            .replace('\n', " ");
    let (parser, events) = transcript(&line);
    let warning = events
        .iter()
        .find_map(|e| match e {
            Event::Warning(w) => Some(w.as_str()),
            _ => None,
        })
        .expect("a warning");
    assert!(
        warning.contains("Bash")
            && warning.contains("rm -rf build")
            && warning.contains("allowed_tools"),
        "{warning}"
    );
    let outcome = parser.outcome().unwrap();
    assert_eq!(outcome.denials, [warning.to_owned()]);
    assert!(!events.iter().any(|e| matches!(e, Event::Error(_))));
}

#[test]
fn internal_diagnostics_are_told_apart_from_errors() {
    assert!(is_internal_diagnostic("[ede_diagnostic] result_type=user"));
    assert!(!is_internal_diagnostic("No conversation found"));
    assert!(!is_internal_diagnostic("[Request interrupted by user]"));
    assert!(!is_internal_diagnostic("[] x"));
}

/// The CLI's stdout (`<` lines) of a bidirectional transcript.
fn stdout_of(transcript: &str) -> String {
    transcript
        .lines()
        .filter_map(|l| l.strip_prefix("< "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_permission_ask_becomes_one_control_and_no_event() {
    let (mut parser, events) = transcript(&stdout_of(include_str!(
        "../../tests/fixtures/permission_allow.transcript"
    )));
    no_warnings(&events);
    let controls = parser.take_controls();
    assert_eq!(controls.len(), 1, "{controls:?}");
    assert!(parser.take_controls().is_empty());
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Raw { kind, .. } if kind.starts_with("control")))
    );
    assert!(events.contains(&Event::ToolResult {
        id: "toolu_1".into(),
        content: "(Bash completed with no output)".into(),
        is_error: false
    }));
    // The prompt's turn and the follow-up's turn each end with a result.
    assert_eq!(parser.results(), 2);
    assert_eq!(parser.outcome().unwrap().result.as_deref(), Some("reply 3"));
}

#[test]
fn a_denial_through_the_prompt_tool_reaches_the_model_and_the_outcome() {
    let (parser, events) = transcript(&stdout_of(include_str!(
        "../../tests/fixtures/permission_deny.transcript"
    )));
    assert!(events.contains(&Event::ToolResult {
        id: "toolu_1".into(),
        content: "no markers please".into(),
        is_error: true
    }));
    let outcome = parser.outcome().unwrap();
    assert!(!outcome.is_error);
    assert_eq!(outcome.denials.len(), 1, "{:?}", outcome.denials);
}

#[test]
fn follow_ups_queued_mid_turn_are_answered_in_one_more_turn() {
    let (parser, events) = transcript(&stdout_of(include_str!(
        "../../tests/fixtures/follow_up.transcript"
    )));
    no_warnings(&events);
    assert_eq!(parser.results(), 2);
    assert_eq!(parser.outcome().unwrap().result.as_deref(), Some("reply 2"));
}
