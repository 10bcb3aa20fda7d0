import Testing

@testable import ReadyGateCore

private func makeRecord(readyAtMs: Int? = nil) -> SessionRecord {
    var record = SessionRecord(id: "s-1", environment: .testing, acceptMode: .immediate, gate: .delay, path: "/ws")
    if let readyAtMs { record.stateTimes[.readyForMessages] = readyAtMs }
    return record
}

@Suite("RaceDetector")
struct RaceDetectorTests {
    private let testing = RaceDetector(timing: DeploymentEnvironment.testing.profile)

    // MARK: Slow handshake

    @Test("the slow-handshake threshold is half the handshake timeout")
    func slowThreshold() {
        #expect(testing.slowHandshakeThresholdMs == 50)
        #expect(RaceDetector(timing: DeploymentEnvironment.production.profile).slowHandshakeThresholdMs == 500)
        let tiny = RaceDetector(timing: TimingProfile(baseDelayMs: 0, handshakeTimeoutMs: 1, retryCapMs: 1))
        #expect(tiny.slowHandshakeThresholdMs == 1)
    }

    @Test("a 101 at or before the threshold is not slow", arguments: [0, 1, 49, 50])
    func notSlow(_ atMs: Int) {
        var record = makeRecord()
        #expect(testing.upstreamUpgraded(atMs: atMs, record: &record) == nil)
        #expect(record.patterns.isEmpty)
    }

    @Test("a 101 after the threshold is upstream_slow_handshake, reported once")
    func slow() {
        var record = makeRecord()
        let event = testing.upstreamUpgraded(atMs: 51, record: &record)
        #expect(event == RaceEvent(.upstreamSlowHandshake, ["handshake_ms": "51", "threshold_ms": "50"]))
        #expect(record.patterns == [.upstreamSlowHandshake])
        #expect(testing.upstreamUpgraded(atMs: 90, record: &record) == nil)
        #expect(record.patterns == [.upstreamSlowHandshake])
    }

    // MARK: Error after READY

    @Test("the error-after-ready window is the handshake timeout, or ten base delays when longer")
    func window() {
        #expect(testing.errorAfterReadyWindowMs == 100)
        #expect(RaceDetector(timing: DeploymentEnvironment.production.profile).errorAfterReadyWindowMs == 1000)
        let slowGate = RaceDetector(timing: TimingProfile(baseDelayMs: 500, handshakeTimeoutMs: 1000, retryCapMs: 200))
        #expect(slowGate.errorAfterReadyWindowMs == 5000)
    }

    @Test("1011 soon after READY is upstream_error_after_ready")
    func error1011() {
        var record = makeRecord(readyAtMs: 10)
        let event = testing.upstreamClosed(code: 1011, atMs: 50, record: &record)
        #expect(event == RaceEvent(.upstreamErrorAfterReady, ["close_code": "1011", "ms_after_ready": "40"]))
        #expect(record.patterns == [.upstreamErrorAfterReady])
    }

    @Test("a dropped connection soon after READY counts as 1006")
    func dropped() {
        var record = makeRecord(readyAtMs: 10)
        let event = testing.upstreamClosed(code: nil, atMs: 10, record: &record)
        #expect(event == RaceEvent(.upstreamErrorAfterReady, ["close_code": "1006", "ms_after_ready": "0"]))
    }

    @Test("an explicit 1006 counts as well")
    func explicit1006() {
        var record = makeRecord(readyAtMs: 10)
        #expect(testing.upstreamClosed(code: 1006, atMs: 20, record: &record)?.fields["close_code"] == "1006")
    }

    @Test("other close codes do not count", arguments: [UInt16(1000), 1001, 1002, 1008, 1013, 1014, 4000])
    func otherCodes(_ code: UInt16) {
        var record = makeRecord(readyAtMs: 10)
        #expect(testing.upstreamClosed(code: code, atMs: 20, record: &record) == nil)
        #expect(record.patterns.isEmpty)
    }

    @Test("the window's edge counts; past it does not")
    func windowEdge() {
        var atEdge = makeRecord(readyAtMs: 10)
        #expect(testing.upstreamClosed(code: 1011, atMs: 110, record: &atEdge) != nil)
        var outside = makeRecord(readyAtMs: 10)
        #expect(testing.upstreamClosed(code: 1011, atMs: 111, record: &outside) == nil)
        #expect(testing.upstreamClosed(code: nil, atMs: 5000, record: &outside) == nil)
        #expect(outside.patterns.isEmpty)
    }

    @Test("a close before READY is not this pattern")
    func notReady() {
        var record = makeRecord()
        #expect(testing.upstreamClosed(code: 1011, atMs: 5, record: &record) == nil)
        #expect(record.patterns.isEmpty)
    }

    @Test("the pattern is reported once per session")
    func errorOnce() {
        var record = makeRecord(readyAtMs: 10)
        #expect(testing.upstreamClosed(code: 1011, atMs: 20, record: &record) != nil)
        #expect(testing.upstreamClosed(code: nil, atMs: 21, record: &record) == nil)
        #expect(record.patterns == [.upstreamErrorAfterReady])
    }

    // MARK: Session record

    @Test("note records each pattern once, in order")
    func noteDedups() {
        var record = makeRecord()
        let answers = [
            record.note(.earlyClientFrames), record.note(.upstreamConnectRetry), record.note(.earlyClientFrames),
            record.note(.bufferBackpressure), record.note(.upstreamConnectRetry),
        ]
        #expect(answers == [true, true, false, true, false])
        #expect(record.patterns == [.earlyClientFrames, .upstreamConnectRetry, .bufferBackpressure])
    }

    @Test("pattern names are DESIGN §4's")
    func patternNames() {
        #expect(
            RacePattern.allCases.map(\.description) == [
                "early_client_frames", "upstream_connect_retry", "upstream_slow_handshake", "upstream_rejected",
                "ready_timeout", "upstream_error_after_ready", "client_gone_before_ready", "buffer_backpressure",
            ]
        )
    }

    @Test("the summary carries the session's facts")
    func summary() {
        var record = makeRecord()
        record.stateTimes = [.initializing: 0, .handshakePending: 1, .readyForMessages: 30, .closed: 900]
        record.earlyFrames = 2
        record.earlyBytes = 40
        record.connectAttempts = 3
        record.closer = .client
        record.endReason = .upstreamNotReady
        record.upstreamStatus = 101
        record.note(.earlyClientFrames)
        record.note(.upstreamConnectRetry)
        let fields = Dictionary(record.summaryFields, uniquingKeysWith: { first, _ in first })
        #expect(fields.count == record.summaryFields.count)
        #expect(record.summaryFields.prefix(2).map(\.0) == ["session", "environment"])
        #expect(fields["session"] == "s-1")
        #expect(fields["environment"] == "testing")
        #expect(fields["accept_mode"] == "immediate")
        #expect(fields["gate"] == "delay")
        #expect(fields["path"] == "/ws")
        #expect(fields["t_handshake_pending_ms"] == "1")
        #expect(fields["t_ready_for_messages_ms"] == "30")
        #expect(fields["t_connected_ms"] == nil)
        #expect(fields["early_frames"] == "2")
        #expect(fields["early_bytes"] == "40")
        #expect(fields["connect_attempts"] == "3")
        #expect(fields["closed_by"] == "client")
        #expect(fields["end_reason"] == "upstream_not_ready")
        #expect(fields["patterns"] == "early_client_frames,upstream_connect_retry")
        #expect(fields["upstream_status"] == "101")
        #expect(fields["client_close_code"] == "-")
        #expect(fields["undelivered_frames"] == nil)
    }

    @Test("undelivered frames appear in the summary only when there were some")
    func summaryUndelivered() {
        var record = makeRecord()
        record.undeliveredFrames = 3
        record.undeliveredBytes = 99
        let fields = Dictionary(record.summaryFields, uniquingKeysWith: { first, _ in first })
        #expect(fields["undelivered_frames"] == "3")
        #expect(fields["undelivered_bytes"] == "99")
        #expect(fields["end_reason"] == "-")
        #expect(fields["patterns"] == "")
    }
}
