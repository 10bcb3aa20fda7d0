#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One field of a ReadyGate JSON log line. The proxy writes most values as strings; numbers and
/// booleans are kept as they are, anything else (null, arrays, objects) is only known to be there.
public enum LogFieldValue: Decodable, Sendable, Equatable {
    case text(String)
    case number(Double)
    case flag(Bool)
    case other

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .text(text)
        } else if let flag = try? container.decode(Bool.self) {
            self = .flag(flag)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else {
            self = .other
        }
    }
}

/// One line of ReadyGate's JSON log (`READYGATE_LOG_FORMAT=json`): an object with `severity`,
/// `message`, `time` and the event's fields.
public struct LogLine: Sendable, Equatable {
    public var severity: String
    public var message: String
    public var time: String
    public var fields: [String: LogFieldValue]

    public init(severity: String, message: String, time: String, fields: [String: LogFieldValue]) {
        self.severity = severity
        self.message = message
        self.time = time
        self.fields = fields
    }

    /// A field as text: a string as it is, an integral number without a fraction.
    public func string(_ key: String) -> String? {
        switch fields[key] {
        case .text(let text): text
        case .number(let number): Self.integral(number).map(String.init) ?? String(number)
        case .flag(let flag): flag ? "true" : "false"
        case .other, nil: nil
        }
    }

    /// A field as an integer, whether the proxy wrote it as a string (`"12"`) or a number.
    public func int(_ key: String) -> Int? {
        switch fields[key] {
        case .text(let text): Int(text)
        case .number(let number): Self.integral(number)
        default: nil
        }
    }

    /// The number as an `Int` when it is a whole number that fits (exactly, within ±2^53).
    private static func integral(_ number: Double) -> Int? {
        number == number.rounded() && abs(number) <= 9_007_199_254_740_992 ? Int(number) : nil
    }
}

/// Parses log lines; keeps one decoder for all of them.
public struct LogLineParser {
    private let decoder = JSONDecoder()

    public init() {}

    /// The line as a ReadyGate log line, or nil: not JSON, not an object, or without the
    /// `severity`, `message` and `time` strings every ReadyGate line has.
    public func parse(_ line: some StringProtocol) -> LogLine? {
        guard line.utf8.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) == UInt8(ascii: "{"),
            var fields = try? decoder.decode([String: LogFieldValue].self, from: Data(line.utf8)),
            case .text(let severity) = fields.removeValue(forKey: "severity"),
            case .text(let message) = fields.removeValue(forKey: "message"),
            case .text(let time) = fields.removeValue(forKey: "time")
        else { return nil }
        return LogLine(severity: severity, message: message, time: time, fields: fields)
    }
}
