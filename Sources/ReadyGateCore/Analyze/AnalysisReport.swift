/// `readygate analyze`'s output: plain-text tables of a ``LogAnalysis`` and its ``Recommendation``.
public enum AnalysisReport {
    public static func render(_ analysis: LogAnalysis) -> String {
        var out = "ReadyGate log analysis\n"
        out += "lines: \(analysis.lines) read, \(analysis.badLines) bad (skipped), "
        out += "\(analysis.otherLines) other ReadyGate lines; \(analysis.sessions.count) sessions\n"
        out += section("Sessions by end reason", sessionsTable("end reason", analysis.sessionsByEndReason, analysis))
        out += section(
            "Sessions by client close code",
            sessionsTable("close code", analysis.sessionsByClientCloseCode, analysis)
        )
        out += section(
            "Race patterns",
            TextTable(headers: ["pattern", "sessions"], rows: analysis.patternCounts.map { [$0.0, String($0.1)] })
        )
        out += section("Time to READY (ms since the client's request)", readyTable(analysis))
        out += section("Replays", replayTable(analysis.replays))
        out += section("Adaptive delay", delayTable(analysis.delayChanges))
        out += "\nRecommendation\n" + recommendation(Recommendation(analysis))
        return out
    }

    private static func section(_ title: String, _ table: TextTable) -> String {
        "\n\(title)\n" + table.render()
    }

    private static func sessionsTable(_ label: String, _ counts: [(String, Int)], _ analysis: LogAnalysis) -> TextTable
    {
        let total = analysis.sessions.count
        return TextTable(
            headers: [label, "sessions", "share"],
            rows: counts.map {
                [$0.0 == "-" ? "- (not ended by the proxy)" : $0.0, String($0.1), Recommendation.percent($0.1, total)]
            },
            empty: "(no session_summary lines)"
        )
    }

    private static func readyTable(_ analysis: LogAnalysis) -> TextTable {
        TextTable(
            headers: ["environment", "gate", "sessions", "ready", "p50", "p90", "p99", "max"],
            rows: analysis.readyTimes.map { row in
                let p = row.percentiles
                return [row.key.environment, row.key.gate, String(row.sessions), String(p?.count ?? 0)]
                    + [p?.p50, p?.p90, p?.p99, p?.max].map { $0.map(String.init) ?? "-" }
            },
            empty: "(no session_summary lines)"
        )
    }

    private static func replayTable(_ replays: ReplayCounts) -> TextTable {
        var rows = [
            ["upstream_replay events", String(replays.events)],
            ["replays in session summaries", String(replays.inSummaries)],
            ["sessions replayed", String(replays.sessions)],
        ]
        rows += replays.byReason.map { ["  reason: \($0.0)", String($0.1)] }
        return TextTable(headers: ["replays", "count"], rows: rows)
    }

    private static func delayTable(_ changes: [DelayChange]) -> TextTable {
        TextTable(
            headers: ["time", "upstream", "old ms", "new ms", "why"],
            rows: changes.map { [$0.time, $0.upstream ?? "-", String($0.oldMs), String($0.newMs), $0.reason] },
            empty: "(no gate_delay_changed events: the delay stayed at its base)"
        )
    }

    private static func recommendation(_ recommendation: Recommendation?) -> String {
        guard let recommendation else { return "(no sessions: nothing to recommend)\n" }
        var settings = ["READYGATE_READY_GATE=\(recommendation.gate.rawValue)"]
        if let delay = recommendation.delayMs { settings.append("READYGATE_BASE_DELAY_MS=\(delay)") }
        if let adaptive = recommendation.adaptive { settings.append("READYGATE_ADAPTIVE=\(adaptive)") }
        if recommendation.replay { settings.append("READYGATE_REPLAY=true") }
        settings.append("READYGATE_HANDSHAKE_TIMEOUT_MS=\(recommendation.handshakeTimeoutMs)")
        var rows = [["gate", recommendation.gate.rawValue]]
        if let delay = recommendation.delayMs {
            rows.append(["delay", "\(delay) ms" + (recommendation.adaptive == true ? " (adaptive)" : "")])
        }
        rows.append(["handshake timeout", "\(recommendation.handshakeTimeoutMs) ms"])
        rows.append(["replay", recommendation.replay ? "on" : "off"])
        rows.append(["settings", settings.joined(separator: " ")])
        var out = TextTable(headers: nil, rows: rows).render()
        out += "evidence:\n"
        for line in recommendation.evidence { out += "  - \(line)\n" }
        return out
    }
}

/// A plain-text table: columns padded to their widest cell, numbers right-aligned.
public struct TextTable: Sendable {
    public var headers: [String]?
    public var rows: [[String]]
    /// Printed instead of the table when there are no rows.
    public var empty: String?

    public init(headers: [String]?, rows: [[String]], empty: String? = nil) {
        self.headers = headers
        self.rows = rows
        self.empty = empty
    }

    public func render() -> String {
        if rows.isEmpty, let empty { return "  \(empty)\n" }
        let all = (headers.map { [$0] } ?? []) + rows
        let columns = all.map(\.count).max() ?? 0
        let widths = (0..<columns).map { column in all.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
        let numeric = (0..<columns).map { column in
            rows.allSatisfy { column >= $0.count || Self.isNumber($0[column]) }
        }
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return numeric[column] ? padding + cell : cell + padding
            }
            return "  " + padded.joined(separator: "  ").trimmingTrailingSpaces() + "\n"
        }
        var out = ""
        if let headers {
            out += line(headers)
            out += line(widths.map { String(repeating: "-", count: $0) })
        }
        for row in rows { out += line(row) }
        return out
    }

    private static func isNumber(_ cell: String) -> Bool {
        cell == "-" || cell.allSatisfy { $0.isNumber || $0 == "." || $0 == "%" }
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
