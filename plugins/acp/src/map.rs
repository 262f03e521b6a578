//! ACP's `session/update` notifications mapped to provider events, `session/prompt`'s
//! `stopReason` to a result status, and `session/request_permission` to and from the host's
//! permission request. Pure Rust with no bindings, so its tests run natively over lines
//! recorded from the real `opencode acp` (`tests/fixtures`).

use serde_json::{Value, json};

pub use rdev_sdk::v0_2::plain::{Event, Usage};

mod tool;

/// Turns the `session/update` notifications of one session into events.
#[derive(Debug, Default)]
pub struct Mapper {
    /// The session's tool calls, for one `tool-use` and one `tool-result` each.
    tools: tool::Tools,
    /// The text of the agent's messages in the current turn: the result's final text.
    text: String,
}

impl Mapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The agent's message text since [`Mapper::start_turn`].
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Forgets the previous turn's text (tool calls stay known: ids are per session).
    pub fn start_turn(&mut self) {
        self.text.clear();
    }

    /// The events of one `session/update`'s params; anything without a native event is
    /// `raw` with its kind, so nothing the agent reports is lost.
    pub fn update(&mut self, params: &Value, out: &mut Vec<Event>) {
        let update = &params["update"];
        let kind = update["sessionUpdate"].as_str().unwrap_or("unknown");
        match kind {
            "agent_message_chunk" => {
                if let Some(text) = content_text(&update["content"]) {
                    self.text.push_str(&text);
                    out.push(Event::Message {
                        text,
                        partial: true,
                    });
                } else {
                    out.push(raw(kind, update));
                }
            }
            "agent_thought_chunk" => match content_text(&update["content"]) {
                Some(text) => out.push(Event::Thinking {
                    text,
                    partial: true,
                }),
                None => out.push(raw(kind, update)),
            },
            "tool_call" | "tool_call_update" => self.tools.update(update, out),
            "usage_update" => {
                out.push(raw(kind, update));
                if let Some(cost) = usd(&update["cost"]) {
                    out.push(Event::Usage {
                        usage: Usage::default(),
                        cost_usd: Some(cost),
                    });
                }
            }
            _ => out.push(raw(kind, update)),
        }
    }
}

/// The text of a content block; `None` for images, audio and resources.
fn content_text(block: &Value) -> Option<String> {
    match block["type"].as_str() {
        Some("text") => block["text"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// A cost in US dollars; other currencies stay in the raw event only.
fn usd(cost: &Value) -> Option<f64> {
    let currency = cost["currency"].as_str()?;
    currency
        .eq_ignore_ascii_case("USD")
        .then(|| cost["amount"].as_f64())
        .flatten()
}

fn raw(kind: &str, update: &Value) -> Event {
    Event::Raw {
        kind: kind.to_owned(),
        json: update.to_string(),
    }
}

/// Token counts of `session/prompt`'s result (`usage`, when the agent reports it).
pub fn prompt_usage(result: &Value) -> Option<Usage> {
    let usage = result.get("usage").filter(|u| u.is_object())?;
    let n = |key: &str| usage[key].as_u64().unwrap_or(0);
    Some(Usage {
        input_tokens: n("inputTokens"),
        output_tokens: n("outputTokens") + n("thoughtTokens"),
        cache_read_tokens: n("cachedReadTokens"),
        cache_write_tokens: n("cachedWriteTokens"),
    })
}

/// How a turn ended, from `session/prompt`'s `stopReason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Completed,
    Cancelled,
    /// The turn ended without doing what was asked; the words say why.
    Failed(String),
}

/// Maps `stopReason` to how the command ends.
pub fn stop(result: &Value) -> Stop {
    match result["stopReason"].as_str() {
        Some("end_turn") => Stop::Completed,
        Some("cancelled") => Stop::Cancelled,
        Some("refusal") => Stop::Failed("the agent refused to continue".into()),
        Some("max_tokens") => Stop::Failed("the model reached its maximum output tokens".into()),
        Some("max_turn_requests") => {
            Stop::Failed("the agent reached its maximum number of model requests in a turn".into())
        }
        Some(other) => Stop::Failed(format!("the turn stopped for an unknown reason: {other}")),
        None => Stop::Failed("the session/prompt result has no stopReason".into()),
    }
}

/// The common meaning of an option the agent offers on a permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    AllowOnce,
    AllowAlways,
    RejectOnce,
    RejectAlways,
}

/// One option of a `session/request_permission`, as the agent words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionOption {
    pub id: String,
    pub label: String,
    pub kind: OptionKind,
}

/// A `session/request_permission` as the host's request-permission will show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub tool_call_id: Option<String>,
    pub tool: String,
    pub input_json: String,
    pub summary: String,
    pub options: Vec<PermissionOption>,
}

/// Reads a `session/request_permission`'s params; options of an unknown kind are left out
/// (the host could not say what they mean).
pub fn ask(params: &Value) -> Ask {
    let call = &params["toolCall"];
    let options = params["options"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|option| {
            let kind = match option["kind"].as_str()? {
                "allow_once" => OptionKind::AllowOnce,
                "allow_always" => OptionKind::AllowAlways,
                "reject_once" => OptionKind::RejectOnce,
                "reject_always" => OptionKind::RejectAlways,
                _ => return None,
            };
            Some(PermissionOption {
                id: option["optionId"].as_str()?.to_owned(),
                label: option["name"].as_str().unwrap_or_default().to_owned(),
                kind,
            })
        })
        .collect();
    let tool = call["kind"]
        .as_str()
        .filter(|k| !k.is_empty())
        .unwrap_or("tool")
        .to_owned();
    let summary = call["title"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map_or_else(|| format!("run {tool}"), str::to_owned);
    Ask {
        tool_call_id: call["toolCallId"].as_str().map(str::to_owned),
        tool,
        input_json: tool::input_of(call).to_string(),
        summary,
        options,
    }
}

/// The host's decision, reduced to what the answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub allow: bool,
    pub remember: bool,
    /// The option the host chose, when it chose one of the agent's.
    pub option_id: Option<String>,
}

/// The `session/request_permission` result for `decided`: the host's own option when it is
/// one of the agent's, else the agent's option of the decided kind ("always" falls back to
/// "once"). An agent that offers no fitting option is told `cancelled`, which never allows.
pub fn answer(ask: &Ask, decided: &Decided) -> Value {
    let fits = |kind: OptionKind| {
        if decided.allow {
            matches!(kind, OptionKind::AllowOnce | OptionKind::AllowAlways)
        } else {
            matches!(kind, OptionKind::RejectOnce | OptionKind::RejectAlways)
        }
    };
    let chosen = decided
        .option_id
        .as_deref()
        .and_then(|id| ask.options.iter().find(|o| o.id == id && fits(o.kind)))
        .or_else(|| {
            let preferred = match (decided.allow, decided.remember) {
                (true, true) => [OptionKind::AllowAlways, OptionKind::AllowOnce],
                (true, false) => [OptionKind::AllowOnce, OptionKind::AllowAlways],
                (false, true) => [OptionKind::RejectAlways, OptionKind::RejectOnce],
                (false, false) => [OptionKind::RejectOnce, OptionKind::RejectAlways],
            };
            preferred
                .iter()
                .find_map(|kind| ask.options.iter().find(|o| o.kind == *kind))
        });
    match chosen {
        Some(option) => json!({"outcome": {"outcome": "selected", "optionId": option.id}}),
        None => cancelled(),
    }
}

/// The `session/request_permission` result when nobody decided (the command was cancelled).
pub fn cancelled() -> Value {
    json!({"outcome": {"outcome": "cancelled"}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(lines: &[Value]) -> Vec<Event> {
        let mut mapper = Mapper::new();
        let mut out = Vec::new();
        for line in lines {
            mapper.update(line, &mut out);
        }
        out
    }

    fn update(value: Value) -> Value {
        json!({"sessionId": "s", "update": value})
    }

    #[test]
    fn chunks_become_partial_messages_and_thinking() {
        let mut mapper = Mapper::new();
        let mut out = Vec::new();
        for (kind, text) in [
            ("agent_thought_chunk", "hmm"),
            ("agent_message_chunk", "Hel"),
            ("agent_message_chunk", "lo"),
        ] {
            mapper.update(
                &update(json!({"sessionUpdate": kind, "content": {"type": "text", "text": text}})),
                &mut out,
            );
        }
        assert_eq!(
            out,
            vec![
                Event::Thinking {
                    text: "hmm".into(),
                    partial: true
                },
                Event::Message {
                    text: "Hel".into(),
                    partial: true
                },
                Event::Message {
                    text: "lo".into(),
                    partial: true
                },
            ]
        );
        assert_eq!(mapper.text(), "Hello");
        mapper.start_turn();
        assert_eq!(mapper.text(), "");
    }

    #[test]
    fn plans_and_unknown_updates_stay_raw_with_their_kind() {
        let plan = json!({"sessionUpdate": "plan", "entries": []});
        let usage = json!({"sessionUpdate": "usage_update", "used": 10, "size": 100,
            "cost": {"amount": 0.25, "currency": "USD"}});
        let out = updates(&[update(plan.clone()), update(usage.clone())]);
        assert_eq!(
            out,
            vec![
                Event::Raw {
                    kind: "plan".into(),
                    json: plan.to_string()
                },
                Event::Raw {
                    kind: "usage_update".into(),
                    json: usage.to_string()
                },
                Event::Usage {
                    usage: Usage::default(),
                    cost_usd: Some(0.25)
                },
            ]
        );
    }

    #[test]
    fn the_real_agent_s_command_list_is_raw() {
        let fixture = include_str!("../tests/fixtures/opencode_initialize.jsonl");
        let last = fixture.lines().last().expect("a line");
        let Some(Ok(crate::rpc::Incoming::Notification { method, params })) =
            crate::rpc::parse(last)
        else {
            panic!("not a notification");
        };
        assert_eq!(method, "session/update");
        let out = updates(&[params]);
        assert!(
            matches!(&out[..], [Event::Raw { kind, .. }] if kind == "available_commands_update")
        );
    }

    #[test]
    fn the_real_agent_s_turn_streams_and_ends_completed() {
        let fixture = include_str!("../tests/fixtures/opencode_prompt.jsonl");
        let mut mapper = Mapper::new();
        let mut out = Vec::new();
        let mut answer = None;
        for line in fixture.lines() {
            match crate::rpc::parse(line) {
                Some(Ok(crate::rpc::Incoming::Notification { params, .. })) => {
                    mapper.update(&params, &mut out)
                }
                Some(Ok(crate::rpc::Incoming::Response { id: 2, outcome })) => {
                    answer = Some(outcome.expect("a result"))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(mapper.text(), "hello from acp");
        assert!(
            out.iter()
                .all(|e| matches!(e, Event::Message { partial: true, .. }))
        );
        let answer = answer.expect("the prompt's answer");
        assert_eq!(stop(&answer), Stop::Completed);
        assert_eq!(
            prompt_usage(&answer),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 3,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn the_real_agent_s_rejected_call_is_asked_and_fails() {
        let fixture = include_str!("../tests/fixtures/opencode_permission_reject.jsonl");
        let mut mapper = Mapper::new();
        let mut out = Vec::new();
        let mut asked = None;
        for line in fixture.lines() {
            match crate::rpc::parse(line) {
                Some(Ok(crate::rpc::Incoming::Notification { params, .. })) => {
                    mapper.update(&params, &mut out)
                }
                Some(Ok(crate::rpc::Incoming::Request { method, params, .. })) => {
                    assert_eq!(method, "session/request_permission");
                    asked = Some(ask(&params));
                }
                Some(Ok(crate::rpc::Incoming::Response { .. })) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let asked = asked.expect("a permission request");
        assert_eq!(asked.tool_call_id.as_deref(), Some("call_touch"));
        assert_eq!(asked.input_json, r#"{"command":"touch marker"}"#);
        let decided = Decided {
            allow: false,
            remember: false,
            option_id: None,
        };
        assert_eq!(answer(&asked, &decided)["outcome"]["optionId"], "reject");
        let [
            Event::ToolUse {
                id,
                name,
                input_json,
            },
            Event::ToolResult {
                content, is_error, ..
            },
        ] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!((id.as_str(), name.as_str()), ("call_touch", "bash"));
        assert!(input_json.contains("touch marker"), "{input_json}");
        assert!(*is_error && content.contains("rejected"), "{content}");
    }

    #[test]
    fn stop_reasons_map_to_statuses_in_words() {
        let of = |reason: &str| stop(&json!({"stopReason": reason}));
        assert_eq!(of("end_turn"), Stop::Completed);
        assert_eq!(of("cancelled"), Stop::Cancelled);
        for reason in ["refusal", "max_tokens", "max_turn_requests", "odd"] {
            let Stop::Failed(words) = of(reason) else {
                panic!("{reason} did not fail");
            };
            assert!(!words.contains('_') || reason == "odd", "{words}");
        }
        assert!(matches!(stop(&json!({})), Stop::Failed(_)));
        assert_eq!(
            prompt_usage(
                &json!({"stopReason": "end_turn", "usage": {"inputTokens": 5,
                "outputTokens": 2, "thoughtTokens": 1, "cachedReadTokens": 3}})
            ),
            Some(Usage {
                input_tokens: 5,
                output_tokens: 3,
                cache_read_tokens: 3,
                cache_write_tokens: 0
            })
        );
    }

    fn permission() -> Ask {
        ask(
            &json!({"sessionId": "s", "toolCall": {"toolCallId": "c1", "title": "touch a",
            "kind": "execute", "rawInput": {"command": "touch a"}},
            "options": [
                {"optionId": "once", "name": "Allow once", "kind": "allow_once"},
                {"optionId": "always", "name": "Always allow", "kind": "allow_always"},
                {"optionId": "reject", "name": "Reject", "kind": "reject_once"},
                {"optionId": "odd", "name": "Odd", "kind": "sometimes"}
            ]}),
        )
    }

    #[test]
    fn permission_requests_pass_the_agent_s_options() {
        let asked = permission();
        assert_eq!(asked.tool_call_id.as_deref(), Some("c1"));
        assert_eq!(asked.tool, "execute");
        assert_eq!(asked.summary, "touch a");
        assert_eq!(asked.input_json, r#"{"command":"touch a"}"#);
        let ids: Vec<&str> = asked.options.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["once", "always", "reject"]);
    }

    #[test]
    fn decisions_map_back_to_the_agent_s_option_ids() {
        let asked = permission();
        let chose = |allow, remember, option_id: Option<&str>| {
            answer(
                &asked,
                &Decided {
                    allow,
                    remember,
                    option_id: option_id.map(str::to_owned),
                },
            )["outcome"]
                .clone()
        };
        let selected = |id: &str| json!({"outcome": "selected", "optionId": id});
        assert_eq!(chose(true, false, None), selected("once"));
        assert_eq!(chose(true, true, None), selected("always"));
        assert_eq!(chose(false, false, None), selected("reject"));
        // No reject_always offered: "always" falls back to reject once.
        assert_eq!(chose(false, true, None), selected("reject"));
        assert_eq!(chose(true, false, Some("always")), selected("always"));
        // An option of the other kind never turns a denial into an allow.
        assert_eq!(chose(false, false, Some("once")), selected("reject"));
        let no_options = Ask {
            options: Vec::new(),
            ..asked.clone()
        };
        let decided = Decided {
            allow: true,
            remember: false,
            option_id: None,
        };
        assert_eq!(answer(&no_options, &decided), cancelled());
    }
}
