use serde_json::json;

use super::*;

/// Feeds a fixture (one `/event` data payload per line) and returns the events and mapper.
fn replay(fixture: &str) -> (Vec<Event>, Mapper) {
    let session = fixture
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            (v["type"] == "session.idle")
                .then(|| v["properties"]["sessionID"].as_str().map(str::to_owned))
                .flatten()
        })
        .expect("fixture has a session.idle");
    let mut mapper = Mapper::new(session);
    let mut out = Vec::new();
    for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
        mapper.feed(line, &mut out);
    }
    (out, mapper)
}

fn texts(events: &[Event], partial: bool) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, partial: p } if *p == partial => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn plain_reply_streams_deltas_then_the_complete_text() {
    let (events, mapper) = replay(include_str!("../../tests/fixtures/plain.jsonl"));
    assert!(mapper.is_idle());
    assert_eq!(mapper.error(), None);
    assert_eq!(texts(&events, true).concat(), "Hello from the fake");
    assert_eq!(texts(&events, false), ["Hello from the fake"]);
    // The prompt's own text part is the user's, not output.
    assert!(!texts(&events, false).contains(&"say hello"));
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Usage { usage, .. } => Some(*usage),
            _ => None,
        })
        .collect();
    assert_eq!(usage.len(), 1, "{events:?}");
    assert_eq!(usage[0].input_tokens, 12);
    assert!(usage[0].output_tokens > 0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Raw { kind, .. } if kind == "session.diff"))
    );
    // Global events (plugin catalogue, connection) are not the session's.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Raw { kind, .. } if kind.starts_with("plugin.")))
    );
}

#[test]
fn tool_call_becomes_tool_use_then_its_result() {
    let (events, mapper) = replay(include_str!("../../tests/fixtures/tool.jsonl"));
    assert!(mapper.is_idle());
    let uses: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolUse {
                id,
                name,
                input_json,
            } => Some((id, name, input_json)),
            _ => None,
        })
        .collect();
    assert_eq!(uses.len(), 1, "{events:?}");
    assert_eq!(uses[0].1, "bash");
    assert!(uses[0].2.contains("from-bash-"), "{}", uses[0].2);
    let use_at = events
        .iter()
        .position(|e| matches!(e, Event::ToolUse { .. }))
        .unwrap();
    let result_at = events
        .iter()
        .position(|e| matches!(e, Event::ToolResult { .. }))
        .unwrap();
    assert!(use_at < result_at);
    let Event::ToolResult {
        id,
        content,
        is_error,
    } = &events[result_at]
    else {
        unreachable!()
    };
    assert_eq!(id, uses[0].0);
    assert!(content.contains("from-bash-42"), "{content}");
    assert!(!is_error);
    assert!(texts(&events, false).contains(&"done"));
}

#[test]
fn upstream_401_is_an_error_naming_the_api_message() {
    let (events, mapper) = replay(include_str!("../../tests/fixtures/api_401.jsonl"));
    assert!(mapper.is_idle());
    let error = mapper.error().expect("an error");
    assert!(error.contains("Incorrect API key"), "{error}");
    assert!(events.iter().any(|e| matches!(e, Event::Error(_))));
}

#[test]
fn events_of_other_sessions_and_garbage() {
    let mut mapper = Mapper::new("ses_a");
    let mut out = Vec::new();
    mapper.feed(
        &json!({"type":"message.part.delta","properties":{"sessionID":"ses_b",
            "messageID":"m","partID":"p","field":"text","delta":"x"}})
        .to_string(),
        &mut out,
    );
    mapper.feed(
        &json!({"type":"session.idle","properties":{"sessionID":"ses_a"}}).to_string(),
        &mut out,
    );
    // An idle before the session was busy does not end the turn.
    assert!(!mapper.is_idle());
    assert!(out.is_empty());
    mapper.feed("{not json", &mut out);
    assert!(matches!(&out[0], Event::Warning(w) if w.contains("{not json")));
    mapper.feed(
        &json!({"type":"todo.updated","properties":{"sessionID":"ses_a","todos":[]}}).to_string(),
        &mut out,
    );
    assert!(matches!(&out[1], Event::Raw { kind, .. } if kind == "todo.updated"));
}

#[test]
fn status_retry_warns_and_permission_asks_are_queued() {
    let mut mapper = Mapper::new("s");
    let mut out = Vec::new();
    mapper.feed(
        &json!({"type":"session.status","properties":{"sessionID":"s",
            "status":{"type":"retry","attempt":2,"message":"overloaded","next":1700}}})
        .to_string(),
        &mut out,
    );
    assert!(
        matches!(&out[0], Event::Warning(w) if w.contains("retry 2 of 3") && w.contains("overloaded")),
        "{out:?}"
    );
    assert!(mapper.gave_up().is_none());
    mapper.feed(
        &json!({"type":"permission.asked","properties":{"sessionID":"s","id":"per_1",
            "permission":"bash","patterns":["rm -rf /"]}})
        .to_string(),
        &mut out,
    );
    let asks = mapper.take_asks();
    assert_eq!(asks.len(), 1);
    assert_eq!(asks[0].id, "per_1");
    assert_eq!(asks[0].permission, "bash");
    assert!(
        mapper.take_asks().is_empty(),
        "each request is handed out once"
    );
    mapper.feed(
        &json!({"type":"session.error","properties":{"sessionID":"s",
            "error":{"name":"APIError","data":{"message":"boom","statusCode":500}}}})
        .to_string(),
        &mut out,
    );
    assert_eq!(mapper.error(), Some("APIError (HTTP 500): boom"));
}

#[test]
fn tool_error_state_is_an_error_result() {
    let mut mapper = Mapper::new("s");
    let mut out = Vec::new();
    for (status, extra) in [
        ("pending", json!({})),
        ("running", json!({})),
        ("error", json!({"error": "exit 1"})),
    ] {
        let mut state = json!({"status": status, "input": {"command": "false"}});
        if let Some(e) = extra.get("error") {
            state["error"] = e.clone();
        }
        mapper.feed(
            &json!({"type":"message.part.updated","properties":{"sessionID":"s","part":{
                "id":"prt","messageID":"m","sessionID":"s","type":"tool","callID":"c1",
                "tool":"bash","state":state}}})
            .to_string(),
            &mut out,
        );
    }
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], Event::ToolUse { id, .. } if id == "c1"));
    assert!(
        matches!(&out[1], Event::ToolResult { content, is_error: true, .. } if content == "exit 1")
    );
}

#[test]
fn turn_outcome_sums_the_turn_after_the_last_user_message() {
    let messages = json!([
        {"info": {"id": "u1", "role": "user"}, "parts": []},
        {"info": {"id": "a1", "role": "assistant", "parentID": "u1", "cost": 5.0,
                  "tokens": {"input": 100, "output": 100}}, "parts": []},
        {"info": {"id": "u2", "role": "user"}, "parts": [{"type": "text", "text": "prompt"}]},
        {"info": {"id": "a2", "role": "assistant", "parentID": "u2", "cost": 0.25,
                  "tokens": {"input": 10, "output": 3, "reasoning": 1, "cache": {"read": 4, "write": 0}}},
         "parts": [{"type": "tool"}]},
        {"info": {"id": "a3", "role": "assistant", "parentID": "u2", "cost": 0.5,
                  "tokens": {"input": 20, "output": 2, "cache": {"read": 0, "write": 7}}},
         "parts": [{"type": "text", "text": "all "}, {"type": "text", "text": "done"}]}
    ]);
    let turn = turn_outcome(&messages, 1).unwrap();
    assert_eq!(turn.steps, 2);
    assert_eq!(turn.final_text.as_deref(), Some("all done"));
    assert_eq!(turn.cost_usd, 0.75);
    assert_eq!(
        turn.usage,
        Usage {
            input_tokens: 30,
            output_tokens: 6,
            cache_read_tokens: 4,
            cache_write_tokens: 7
        }
    );
    assert_eq!(turn.error, None);

    let failed = json!([
        {"info": {"id": "u1", "role": "user"}, "parts": []},
        {"info": {"id": "a1", "role": "assistant", "parentID": "u1",
                  "error": {"name": "APIError", "data": {"message": "Incorrect API key", "statusCode": 401}}},
         "parts": []}
    ]);
    let turn = turn_outcome(&failed, 1).unwrap();
    assert_eq!(
        turn.error.as_deref(),
        Some("APIError (HTTP 401): Incorrect API key")
    );
    assert_eq!(turn.error_name.as_deref(), Some("APIError"));
    assert_eq!(turn_outcome(&json!([]), 1), None);

    // The prompt and one follow-up: both turns are summed, the text is the follow-up's.
    let both = turn_outcome(&messages, 2).unwrap();
    assert_eq!(both.steps, 3);
    assert_eq!(both.cost_usd, 5.75);
    assert_eq!(both.final_text.as_deref(), Some("all done"));
    assert_eq!(turn_outcome(&messages, 3), None);
}

#[test]
fn aborted_turn_ends_idle_with_the_abort_error() {
    let (_, mapper) = replay(include_str!("../../tests/fixtures/aborted.jsonl"));
    assert!(mapper.is_idle());
    let error = mapper.error().expect("the abort is reported");
    assert!(error.contains("MessageAbortedError"), "{error}");
}

#[test]
fn asks_of_sub_agent_sessions_are_queued_and_other_sessions_ignored() {
    let mut mapper = Mapper::new("s");
    let mut out = Vec::new();
    let feed = |mapper: &mut Mapper, out: &mut Vec<Event>, value: serde_json::Value| {
        mapper.feed(&value.to_string(), out);
    };
    feed(
        &mut mapper,
        &mut out,
        json!({"type":"session.created",
        "properties":{"info":{"id":"child","parentID":"s"}}}),
    );
    feed(
        &mut mapper,
        &mut out,
        json!({"type":"session.created",
        "properties":{"info":{"id":"grandchild","parentID":"child"}}}),
    );
    feed(
        &mut mapper,
        &mut out,
        json!({"type":"session.created",
        "properties":{"info":{"id":"stranger","parentID":"other"}}}),
    );
    for (session, id) in [
        ("grandchild", "per_a"),
        ("stranger", "per_b"),
        ("s", "per_c"),
    ] {
        feed(
            &mut mapper,
            &mut out,
            json!({"type":"permission.asked","properties":{
            "sessionID": session, "id": id, "permission": "edit", "patterns": ["a.rs"]}}),
        );
    }
    let ids: Vec<String> = mapper.take_asks().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["per_a", "per_c"]);
    feed(
        &mut mapper,
        &mut out,
        json!({"type":"permission.asked","properties":{
        "sessionID":"s","id":"../x","permission":"bash"}}),
    );
    assert!(matches!(out.last(), Some(Event::Warning(w)) if w.contains("cannot answer")));
}

#[test]
fn a_tool_call_input_is_kept_for_its_permission_request() {
    let mut mapper = Mapper::new("s");
    let mut out = Vec::new();
    mapper.feed(
        &json!({"type":"message.part.updated","properties":{"part":{"id":"p1","sessionID":"s",
            "messageID":"m1","type":"tool","callID":"c1","tool":"bash",
            "state":{"status":"running","input":{"command":"echo hi"}}}}})
        .to_string(),
        &mut out,
    );
    assert_eq!(
        mapper.tool_input("c1"),
        Some(&json!({"command": "echo hi"}))
    );
    assert_eq!(mapper.tool_input("c2"), None);
}

#[test]
fn expect_turn_waits_for_the_next_busy_and_idle() {
    let mut mapper = Mapper::new("s");
    let mut out = Vec::new();
    let status = |t: &str| {
        json!({"type":"session.status","properties":{"sessionID":"s","status":{"type":t}}})
            .to_string()
    };
    let idle = json!({"type":"session.idle","properties":{"sessionID":"s"}}).to_string();
    mapper.feed(&status("busy"), &mut out);
    mapper.feed(&idle, &mut out);
    assert!(mapper.is_idle());
    mapper.expect_turn();
    assert!(!mapper.is_idle());
    mapper.feed(&idle, &mut out);
    assert!(
        !mapper.is_idle(),
        "an idle before the follow-up's busy ends nothing"
    );
    mapper.feed(&status("busy"), &mut out);
    mapper.feed(&idle, &mut out);
    assert!(mapper.is_idle());
}

#[test]
fn a_recorded_permission_request_is_queued_with_its_call() {
    let (events, mut mapper) = replay(include_str!("../../tests/fixtures/permission_once.jsonl"));
    let asks = mapper.take_asks();
    assert_eq!(asks.len(), 1, "{asks:?}");
    let ask = &asks[0];
    assert_eq!(ask.permission, "bash");
    assert_eq!(ask.call_id.as_deref(), Some("call_allowed"));
    assert!(ask.id.starts_with("per_"), "{ask:?}");
    let input = ask.input(mapper.tool_input("call_allowed"));
    assert_eq!(input["command"], "echo allowed-$((6*7))");
    assert_eq!(ask.summary(&input), "bash: echo allowed-$((6*7))");
    assert!(
        events.iter().any(|e| matches!(e,
            Event::ToolResult { id, content, is_error: false }
                if id == "call_allowed" && content.contains("allowed-42"))),
        "the allowed call ran"
    );
}

#[test]
fn a_retry_beyond_the_bound_gives_the_turn_up_in_words() {
    let mut mapper = Mapper::new("s").with_max_retries(1);
    let mut out = Vec::new();
    let retry = |attempt: u32| {
        json!({"type":"session.status","properties":{"sessionID":"s",
            "status":{"type":"retry","attempt":attempt,"message":"upstream overloaded","next":0}}})
        .to_string()
    };
    mapper.feed(&retry(1), &mut out);
    assert!(
        matches!(&out[0], Event::Warning(w) if w.starts_with("the model call failed; retry 1 of 1 in 0.00 s")),
        "{out:?}"
    );
    assert!(mapper.gave_up().is_none());
    mapper.feed(&retry(2), &mut out);
    assert_eq!(
        mapper.gave_up(),
        Some("the model call failed after 1 retry: upstream overloaded")
    );
}
