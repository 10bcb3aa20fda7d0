import Foundation
import Testing

@testable import ReadyGateCore

/// A log line the way StructuredLogHandler writes it: severity, message, time, then the fields
/// sorted by key, every value a string.
func logLine(_ message: String, _ fields: [String: String], time: String = "2026-12-03T10:00:00.000Z") -> String {
    var line = "{\"severity\":\"INFO\",\"message\":\"\(message)\",\"time\":\"\(time)\""
    for key in fields.keys.sorted() { line += ",\"\(key)\":\"\(fields[key]!)\"" }
    return line + "}"
}

/// A `session_summary` line with the fields every summary has.
func summaryLine(
    _ session: String,
    environment: String = "production",
    gate: String = "delay",
    readyAtMs: Int? = 40,
    endReason: String = "-",
    clientCloseCode: String = "1000",
    patterns: [String] = [],
    replays: Int? = nil
) -> String {
    var fields = [
        "session": session, "environment": environment, "accept_mode": "immediate", "gate": gate, "path": "/echo",
        "t_initializing_ms": "0", "t_handshake_pending_ms": "0", "frames_in": "1", "bytes_in": "5",
        "messages_in": "1", "frames_out": "1", "bytes_out": "5", "messages_out": "1", "early_frames": "1",
        "early_bytes": "5", "peak_held_bytes": "5", "connect_attempts": "1", "client_close_code": clientCloseCode,
        "upstream_close_code": "1000", "closed_by": "client", "end_reason": endReason,
        "patterns": patterns.joined(separator: ","), "upstream_status": "101",
    ]
    if let readyAtMs { fields["t_ready_for_messages_ms"] = String(readyAtMs) }
    if let replays { fields["replays"] = String(replays) }
    return logLine("session_summary", fields)
}

func listeningLine(environment: String = "production", gate: String = "delay", baseDelayMs: Int = 25, timeoutMs: Int)
    -> String
{
    logLine(
        "listening",
        [
            "address": "127.0.0.1:8080", "upstream": "http://127.0.0.1:9000", "environment": environment,
            "accept_mode": "immediate", "ready_gate": gate, "base_delay_ms": String(baseDelayMs),
            "handshake_timeout_ms": String(timeoutMs), "threads": "2", "admin": "off",
        ]
    )
}

extension Percentiles {
    var values: [Int] { [p50, p90, p99, max] }
}

extension ReplayCounts {
    /// Events, in summaries, sessions, total.
    var values: [Int] { [events, inSummaries, sessions, total] }
}

func analyze(_ lines: [String]) -> LogAnalysis {
    LogAnalysis.analyze(lines.joined(separator: "\n") + "\n")
}

/// What the captured run in Fixtures/analyze-burst.jsonl did: 3 bursts of 15 early senders
/// through `readygate serve` (production profile, delay gate) against racy_backend.py with a set-up
/// of 30-70 ms; the adaptive delay grew 25 → 50 → 100 ms and the third burst lost none.
enum FixtureFacts {
    static let sessions = 45
    static let endReasons = ["-": 45]
    static let clientCloseCodes = ["1000": 24, "1011": 21]
    static let errorsAfterReady = 21
    static let delays = [50, 100]
}

@Suite("Analyze: parsing")
struct AnalyzeParsingTests {
    /// Lines captured from `readygate serve` (production profile, delay gate) against racy_backend.py.
    static var fixture: String {
        get throws {
            let url = try #require(
                Bundle.module.url(forResource: "analyze-burst", withExtension: "jsonl", subdirectory: "Fixtures")
            )
            return try String(contentsOf: url, encoding: .utf8)
        }
    }

    @Test("a real session_summary line gives its session, environment, gate, end, close code, READY time")
    func realSummary() throws {
        let line = try #require(
            try Self.fixture.split(separator: "\n").first { $0.contains("\"session_summary\"") }
        )
        let parsed = try #require(LogLineParser().parse(line))
        let summary = try #require(SessionSummary(parsed))
        #expect(summary.environment == "production")
        #expect(summary.gate == "delay")
        #expect(!summary.session.isEmpty)
        #expect(summary.readyAtMs != nil)
        #expect(summary.replays == 0, "no replays field yet: 0")
    }

    @Test("the captured run: its sessions, end reasons, close codes, patterns and delay changes")
    func realRun() throws {
        let analysis = LogAnalysis.analyze(try Self.fixture)
        #expect(analysis.badLines == 0)
        #expect(analysis.sessions.count == FixtureFacts.sessions)
        #expect(analysis.start?.handshakeTimeoutMs == 1000)
        let byReason = Dictionary(uniqueKeysWithValues: analysis.sessionsByEndReason)
        #expect(byReason == FixtureFacts.endReasons)
        #expect(Dictionary(uniqueKeysWithValues: analysis.sessionsByClientCloseCode) == FixtureFacts.clientCloseCodes)
        let patterns = Dictionary(uniqueKeysWithValues: analysis.patternCounts)
        #expect(patterns["upstream_error_after_ready"] == FixtureFacts.errorsAfterReady)
        #expect(patterns["early_client_frames"] == FixtureFacts.sessions)
        #expect(analysis.delayChanges.map(\.newMs) == FixtureFacts.delays)
        #expect(analysis.delayChanges.allSatisfy { $0.reason == "upstream_error_after_ready" })
    }

    @Test("bad lines are counted and skipped; the good ones around them still count")
    func badLines() {
        let analysis = analyze([
            summaryLine("a"),
            "not json at all",
            "[1, 2, 3]",
            "{\"message\":\"session_summary\"}",  // not a ReadyGate line: no severity, no time
            "2026-12-03T10:00:00.000Z INFO session_summary session=b",  // the text format
            logLine("session_summary", ["session": "c", "environment": "production"]),  // fields missing
            logLine("gate_delay_changed", ["old_ms": "25", "new_ms": "fifty", "reason": "upstream_error_after_ready"]),
            logLine("upstream_error_after_ready", ["close_code": "1011"]),  // no session
            "{\"severity\":\"INFO\",\"message\":\"session_summary\",\"time\":\"t\"",  // cut short
            "",
            "   ",
            logLine("http_client_gone", ["response_started": "false"]),
            summaryLine("d"),
        ])
        #expect(analysis.lines == 11, "blank lines are not lines")
        #expect(analysis.badLines == 8)
        #expect(analysis.otherLines == 1)
        #expect(analysis.sessions.map(\.session) == ["a", "d"])
    }

    @Test("numbers may come as JSON numbers or strings")
    func numbersEitherWay() throws {
        let line = try #require(
            LogLineParser().parse(
                "{\"severity\":\"INFO\",\"message\":\"gate_delay_changed\",\"time\":\"t\",\"old_ms\":25,"
                    + "\"new_ms\":\"50\",\"reason\":\"upstream_error_after_ready\",\"extra\":[1,{\"a\":null}]}"
            )
        )
        let change = DelayChange(time: "t", upstream: nil, oldMs: 25, newMs: 50, reason: "upstream_error_after_ready")
        #expect(DelayChange(line) == change)
        #expect(line.fields["extra"] == .other)
        let huge = try #require(
            LogLineParser().parse("{\"severity\":\"INFO\",\"message\":\"m\",\"time\":\"t\",\"n\":1e300}")
        )
        #expect(huge.int("n") == nil, "too large for an Int: not a crash")
        #expect(huge.string("n") == "1e+300")
    }

    @Test("empty input: nothing counted, no recommendation, the report says so")
    func emptyInput() {
        let analysis = LogAnalysis.analyze("")
        #expect(analysis.lines == 0)
        #expect(analysis.badLines == 0)
        #expect(analysis.sessions.isEmpty)
        #expect(Recommendation(analysis) == nil)
        let report = AnalysisReport.render(analysis)
        #expect(report.contains("lines: 0 read, 0 bad (skipped)"))
        #expect(report.contains("nothing to recommend"))
    }
}

@Suite("Analyze: aggregates")
struct AnalyzeAggregateTests {
    @Test("nearest-rank percentiles")
    func percentiles() throws {
        let hundred = try #require(Percentiles(Array((1...100).reversed())))
        #expect(hundred.values == [50, 90, 99, 100])
        let one = try #require(Percentiles([7]))
        #expect(one.values == [7, 7, 7, 7])
        let ten = try #require(Percentiles([10, 20, 30, 40, 50, 60, 70, 80, 90, 1000]))
        #expect(ten.values == [50, 90, 1000, 1000])
        #expect(Percentiles([]) == nil)
    }

    @Test("end reasons and close codes, most first")
    func endReasonsAndCodes() {
        let analysis = analyze([
            summaryLine("a"), summaryLine("b"),
            summaryLine("c", endReason: "upstream_closed", clientCloseCode: "-"),
            summaryLine("d", endReason: "upstream_not_ready", clientCloseCode: "1013"),
            summaryLine("e", endReason: "upstream_not_ready", clientCloseCode: "1013"),
            summaryLine("f", endReason: "upstream_not_ready", clientCloseCode: "1013"),
        ])
        #expect(analysis.sessionsByEndReason.map(\.0) == ["upstream_not_ready", "-", "upstream_closed"])
        #expect(analysis.sessionsByEndReason.map(\.1) == [3, 2, 1])
        #expect(analysis.sessionsByClientCloseCode.map(\.0) == ["1013", "1000", "-"])
    }

    @Test("a pattern's event and its session's summary count once; an event without a summary still counts")
    func patternsOncePerSession() {
        let analysis = analyze([
            logLine("early_client_frames", ["session": "a", "pattern": "early_client_frames"]),
            summaryLine("a", patterns: ["early_client_frames"]),
            logLine("upstream_error_after_ready", ["session": "b", "close_code": "1011", "ms_after_ready": "3"]),
            summaryLine("c", patterns: ["early_client_frames", "upstream_error_after_ready"]),
        ])
        let counts = Dictionary(uniqueKeysWithValues: analysis.patternCounts)
        #expect(counts["early_client_frames"] == 2)
        #expect(counts["upstream_error_after_ready"] == 2)
        #expect(counts["ready_timeout"] == 0, "every known pattern is listed")
    }

    @Test("time to READY per environment and gate; sessions never READY are counted but not timed")
    func readyTimes() throws {
        let analysis = analyze(
            (1...10).map { summaryLine("d\($0)", readyAtMs: $0 * 10) }
                + [summaryLine("x", readyAtMs: nil, endReason: "upstream_not_ready")]
                + [summaryLine("m", environment: "staging", gate: "message", readyAtMs: 300)]
        )
        #expect(analysis.readyTimes.count == 2)
        let delay = analysis.readyTimes[0]
        #expect(delay.key == .init(environment: "production", gate: "delay"))
        #expect(delay.sessions == 11)
        #expect(delay.percentiles?.count == 10)
        #expect(delay.percentiles?.p50 == 50)
        #expect(delay.percentiles?.max == 100)
        #expect(analysis.readyTimes[1].percentiles?.p99 == 300)
    }

    @Test("replays: events, the summaries' field, both, or neither (0)")
    func replays() {
        let none = analyze([summaryLine("a")]).replays
        #expect(none.values == [0, 0, 0, 0])

        let events = analyze([
            logLine("upstream_replay", ["session_id": "a", "attempt": "1", "reason": "1011"]),
            logLine("upstream_replay", ["session_id": "a", "attempt": "2", "reason": "connection_lost"]),
            logLine("upstream_replay", ["session_id": "b", "attempt": "1", "reason": "1011"]),
        ]).replays
        #expect(events.values == [3, 0, 2, 3])
        #expect(events.byReason.map(\.0) == ["1011", "connection_lost"])

        let summaries = analyze([summaryLine("a", replays: 2), summaryLine("b", replays: 0)]).replays
        #expect(summaries.values == [0, 2, 1, 2])

        let both = analyze([
            logLine("upstream_replay", ["session_id": "a", "attempt": "1", "reason": "1011"]),
            summaryLine("a", replays: 1),
        ]).replays
        #expect(both.values == [1, 1, 1, 1])
    }

    @Test("the report has each table and the numbers in it")
    func report() {
        let report = AnalysisReport.render(
            analyze([
                listeningLine(timeoutMs: 1000),
                summaryLine("a", readyAtMs: 30),
                summaryLine(
                    "b",
                    endReason: "upstream_closed",
                    clientCloseCode: "1011",
                    patterns: ["early_client_frames"]
                ),
                logLine(
                    "gate_delay_changed",
                    ["old_ms": "25", "new_ms": "50", "reason": "upstream_error_after_ready", "upstream": "ws://b"],
                    time: "2026-12-03T10:01:02.345Z"
                ),
                "garbage",
            ])
        )
        for expected in [
            "lines: 5 read, 1 bad (skipped), 1 other ReadyGate lines; 2 sessions",
            "Sessions by end reason", "upstream_closed", "Sessions by client close code", "1011",
            "Race patterns", "early_client_frames", "Time to READY", "production", "Replays",
            "upstream_replay events", "Adaptive delay", "2026-12-03T10:01:02.345Z", "Recommendation", "evidence:",
        ] {
            #expect(report.contains(expected), "missing \(expected)")
        }
        #expect(report.contains(#/upstream_closed\s+1\s+50\.0%/#))
        #expect(report.contains(#/2026-12-03T10:01:02\.345Z\s+ws://b\s+25\s+50\s+upstream_error_after_ready/#))
    }
}

@Suite("Analyze: recommendation")
struct AnalyzeRecommendationTests {
    @Test("clean delay-gate sessions well inside the timeout: keep the gate, delay and timeout")
    func keepsWhatWorks() throws {
        let recommendation = try #require(
            Recommendation(analyze([listeningLine(timeoutMs: 1000)] + (1...20).map { summaryLine("s\($0)") }))
        )
        #expect(recommendation.gate == .delay)
        #expect(recommendation.delayMs == 25)
        #expect(recommendation.handshakeTimeoutMs == 1000)
        #expect(!recommendation.replay)
        #expect(recommendation.evidence.contains("0 of 20 delay- and ping-gate sessions failed after READY"))
    }

    @Test("failures after READY, the adaptive delay moved: start where it ended, adaptive, replay")
    func errorsAfterReadyStartWhereTheDelayEnded() throws {
        let lines =
            [listeningLine(timeoutMs: 1000)]
            + (1...6).map { summaryLine("ok\($0)") }
            + (1...4).map {
                summaryLine(
                    "bad\($0)",
                    endReason: "upstream_closed",
                    clientCloseCode: "1011",
                    patterns: ["early_client_frames", "upstream_error_after_ready"]
                )
            }
            + [
                logLine(
                    "gate_delay_changed",
                    ["old_ms": "25", "new_ms": "50", "reason": "upstream_error_after_ready"]
                ),
                logLine(
                    "gate_delay_changed",
                    ["old_ms": "50", "new_ms": "100", "reason": "upstream_error_after_ready"]
                ),
            ]
        let recommendation = try #require(Recommendation(analyze(lines)))
        #expect(recommendation.gate == .ping)
        #expect(
            recommendation.evidence.contains { $0.hasPrefix("the ping gate counts the delay from the backend's pong") }
        )
        #expect(recommendation.delayMs == 100)
        #expect(recommendation.adaptive == true)
        #expect(recommendation.replay)
        #expect(recommendation.handshakeTimeoutMs == 1000)
        #expect(
            recommendation.evidence.contains {
                $0.hasPrefix("4 of 10 delay- and ping-gate sessions (40.0%) ended upstream_error_after_ready")
            }
        )
        #expect(recommendation.evidence.contains { $0.contains("changed 2 times and ended at 100 ms") })
    }

    @Test("failures after READY, the delay never moved (adaptive off): twice the delay, adaptive on")
    func errorsAfterReadyWithoutAdaptiveDoubleTheDelay() throws {
        let lines = [
            listeningLine(baseDelayMs: 30, timeoutMs: 1000), summaryLine("ok"),
            summaryLine("bad", patterns: ["upstream_error_after_ready"]),
        ]
        let recommendation = try #require(Recommendation(analyze(lines)))
        #expect(recommendation.gate == .ping)
        #expect(recommendation.delayMs == 60)
        #expect(recommendation.adaptive == true)
        #expect(recommendation.evidence.contains { $0.contains("twice the 30 ms delay, 60 ms") })
    }

    @Test("the captured run: start at the 100 ms the adaptive delay ended at, with replay")
    func capturedRun() throws {
        let recommendation = try #require(Recommendation(LogAnalysis.analyze(try AnalyzeParsingTests.fixture)))
        #expect(recommendation.gate == .ping)
        #expect(recommendation.delayMs == 100)
        #expect(recommendation.replay)
        #expect(recommendation.handshakeTimeoutMs == 1000)
    }

    @Test("the delay never goes past half the handshake timeout; the evidence says a longer one cannot help")
    func delayCapped() throws {
        let lines =
            [listeningLine(timeoutMs: 200)]
            + [summaryLine("bad", readyAtMs: 60, patterns: ["upstream_error_after_ready"])]
            + [
                logLine(
                    "gate_delay_changed",
                    ["old_ms": "50", "new_ms": "100", "reason": "upstream_error_after_ready"]
                )
            ]
        let recommendation = try #require(Recommendation(analyze(lines)))
        #expect(recommendation.delayMs == 100)
        #expect(recommendation.evidence.contains { $0.contains("cannot help") })
    }

    @Test("failures after READY with the delay gate but clean message-gate sessions: the message gate")
    func messageGateWhenItWorks() throws {
        let lines =
            [summaryLine("d", patterns: ["upstream_error_after_ready"])]
            + (1...3).map { summaryLine("m\($0)", gate: "message", readyAtMs: 210) }
        let recommendation = try #require(Recommendation(analyze(lines)))
        #expect(recommendation.gate == .message)
        #expect(recommendation.delayMs == nil)
        #expect(recommendation.evidence.contains("none of the 3 message-gate sessions failed after READY"))
    }

    @Test("ready_timeout: a larger handshake timeout (twice it, rounded up to 100 ms)")
    func readyTimeoutGrowsTheTimeout() throws {
        let lines =
            [listeningLine(gate: "message", timeoutMs: 500)]
            + (1...9).map { summaryLine("m\($0)", gate: "message", readyAtMs: 120) }
            + [
                summaryLine(
                    "slow",
                    gate: "message",
                    readyAtMs: nil,
                    endReason: "upstream_not_ready",
                    clientCloseCode: "1013",
                    patterns: ["ready_timeout"]
                )
            ]
        let recommendation = try #require(Recommendation(analyze(lines)))
        #expect(recommendation.gate == .message)
        #expect(recommendation.handshakeTimeoutMs == 1000)
        #expect(recommendation.evidence.contains { $0.hasPrefix("1 of 10 sessions hit ready_timeout") })
    }

    @Test("time to READY p99 above half the timeout: twice the p99, rounded up to 100 ms")
    func p99NearTheTimeout() throws {
        let lines = [listeningLine(timeoutMs: 1000)] + (1...100).map { summaryLine("s\($0)", readyAtMs: 5 * $0 + 200) }
        let recommendation = try #require(Recommendation(analyze(lines)))
        #expect(recommendation.handshakeTimeoutMs == 1400, "p99 695 ms → 1390 → 1400")
        #expect(recommendation.evidence.contains { $0.contains("p99 is 695 ms, more than half") })
    }

    @Test("no listening line: the sessions' environment's profile is assumed")
    func profileWithoutListening() throws {
        let recommendation = try #require(
            Recommendation(analyze([summaryLine("a", environment: "staging", readyAtMs: 30)]))
        )
        #expect(recommendation.handshakeTimeoutMs == 500)
        #expect(recommendation.delayMs == 25)
        #expect(recommendation.evidence.contains { $0.hasPrefix("no listening line: assumed the staging profile") })
    }
}
