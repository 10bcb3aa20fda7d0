/// ReadyGate's JSON log, read line by line and gathered for `readygate analyze`. No I/O: the
/// caller hands in the lines.
///
/// A line that is not JSON, not a ReadyGate line, or a line the analysis uses that lacks one of
/// its fields is counted in ``badLines`` and skipped; other ReadyGate lines (`listening`,
/// `http_client_gone`, ...) are counted in ``otherLines``. Empty lines are not counted at all.
public struct LogAnalysis: Sendable {
    public private(set) var lines = 0
    public private(set) var badLines = 0
    public private(set) var otherLines = 0
    public private(set) var sessions: [SessionSummary] = []
    public private(set) var patternEvents: [PatternEvent] = []
    public private(set) var replayEvents: [ReplayEvent] = []
    public private(set) var delayChanges: [DelayChange] = []
    /// The last `listening` line's settings (a log of several runs: the latest).
    public private(set) var start: ProxyStart?

    public init() {}

    /// Analyses a whole log.
    public static func analyze(_ text: some StringProtocol) -> LogAnalysis {
        var analysis = LogAnalysis()
        let parser = LogLineParser()
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            analysis.add(line, parser: parser)
        }
        return analysis
    }

    /// Adds one line.
    public mutating func add(_ line: some StringProtocol, parser: LogLineParser) {
        guard line.contains(where: { !$0.isWhitespace }) else { return }
        lines += 1
        guard let parsed = parser.parse(line) else {
            badLines += 1
            return
        }
        add(parsed)
    }

    /// Adds one parsed line.
    public mutating func add(_ line: LogLine) {
        let used: Bool
        switch line.message {
        case "session_summary": used = Self.append(SessionSummary(line), to: &sessions)
        case "upstream_replay": used = Self.append(ReplayEvent(line), to: &replayEvents)
        case "gate_delay_changed": used = Self.append(DelayChange(line), to: &delayChanges)
        case "listening":
            start = ProxyStart(line)
            otherLines += 1
            return
        case _ where RacePattern(rawValue: line.message) != nil:
            used = Self.append(PatternEvent(line), to: &patternEvents)
        default:
            otherLines += 1
            return
        }
        if !used { badLines += 1 }
    }

    /// Static: a method of `self` would hold a copy of `self`, so each append would copy the list.
    private static func append<T>(_ value: T?, to list: inout [T]) -> Bool {
        guard let value else { return false }
        list.append(value)
        return true
    }

    // MARK: Aggregates

    /// Each session's patterns: its summary's and its pattern events' (a log cut before the
    /// summary still counts the events), keyed by session id.
    public var patternsBySession: [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for summary in sessions { result[summary.session, default: []].formUnion(summary.patterns) }
        for event in patternEvents { result[event.session, default: []].insert(event.pattern) }
        return result
    }

    /// Sessions by end reason, most first (`-`: no side failed).
    public var sessionsByEndReason: [(String, Int)] { Self.counted(sessions.map(\.endReason)) }

    /// Sessions by the client's close code, most first (`-`: no close frame).
    public var sessionsByClientCloseCode: [(String, Int)] { Self.counted(sessions.map(\.clientCloseCode)) }

    /// Sessions per race pattern: every pattern ReadyGate knows (0 included), in its order, then
    /// any other name the log has.
    public var patternCounts: [(String, Int)] {
        var counts: [String: Int] = [:]
        for patterns in patternsBySession.values {
            for pattern in patterns { counts[pattern, default: 0] += 1 }
        }
        let known = RacePattern.allCases.map(\.rawValue)
        let unknown = counts.keys.filter { !known.contains($0) }.sorted()
        return (known + unknown).map { ($0, counts[$0] ?? 0) }
    }

    /// Time to READY per environment and gate, in the order first seen.
    public var readyTimes: [ReadyTimeRow] {
        var order: [ReadyTimeRow.Key] = []
        var times: [ReadyTimeRow.Key: (sessions: Int, ready: [Int])] = [:]
        for summary in sessions {
            let key = ReadyTimeRow.Key(environment: summary.environment, gate: summary.gate)
            if times[key] == nil { order.append(key) }
            times[key, default: (0, [])].sessions += 1
            if let at = summary.readyAtMs { times[key]!.ready.append(at) }
        }
        return order.map { key in
            ReadyTimeRow(key: key, sessions: times[key]!.sessions, percentiles: Percentiles(times[key]!.ready))
        }
    }

    /// Time to READY over every session that reached it.
    public var allReadyTimes: Percentiles? { Percentiles(sessions.compactMap(\.readyAtMs)) }

    /// Replays, from the events and from the summaries' `replays` field (either may be absent).
    public var replays: ReplayCounts {
        var sessionsReplayed = Set(replayEvents.map(\.session))
        for summary in sessions where summary.replays > 0 { sessionsReplayed.insert(summary.session) }
        return ReplayCounts(
            events: replayEvents.count,
            inSummaries: sessions.reduce(0) { $0 + $1.replays },
            sessions: sessionsReplayed.count,
            byReason: Self.counted(replayEvents.map(\.reason))
        )
    }

    static func counted(_ values: [String]) -> [(String, Int)] {
        var counts: [String: Int] = [:]
        for value in values { counts[value, default: 0] += 1 }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}

/// Time to READY of the sessions of one environment and gate.
public struct ReadyTimeRow: Sendable, Equatable {
    public struct Key: Hashable, Sendable {
        public var environment: String
        public var gate: String
    }

    public var key: Key
    /// Sessions of this environment and gate, READY or not.
    public var sessions: Int
    /// Over those that reached READY; nil when none did.
    public var percentiles: Percentiles?
}

/// Replay counts: `upstream_replay` events, the summaries' `replays`, and the sessions either names.
public struct ReplayCounts: Sendable {
    public var events: Int
    public var inSummaries: Int
    public var sessions: Int
    public var byReason: [(String, Int)]

    /// The replays: the events and the summaries count the same ones, so the larger of the two.
    public var total: Int { max(events, inSummaries) }
}

/// Nearest-rank percentiles of a sample of milliseconds.
public struct Percentiles: Sendable, Equatable {
    public var count: Int
    public var p50: Int
    public var p90: Int
    public var p99: Int
    public var max: Int

    /// Nil for an empty sample.
    public init?(_ sample: [Int]) {
        guard !sample.isEmpty else { return nil }
        let sorted = sample.sorted()
        func rank(_ percent: Int) -> Int {
            let index = (percent * sorted.count + 99) / 100 - 1
            return sorted[Swift.max(0, Swift.min(sorted.count - 1, index))]
        }
        count = sorted.count
        p50 = rank(50)
        p90 = rank(90)
        p99 = rank(99)
        max = sorted[sorted.count - 1]
    }
}
