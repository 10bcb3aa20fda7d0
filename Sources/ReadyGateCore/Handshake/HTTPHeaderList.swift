/// HTTP header fields as an ordered list of name/value pairs: what Core needs of headers, without
/// depending on an HTTP library. Names compare case-insensitively (RFC 9110 §5.1).
public struct HTTPHeaderList: Sendable, Equatable, ExpressibleByDictionaryLiteral, Sequence {
    public var fields: [(name: String, value: String)]

    public init(_ fields: [(name: String, value: String)] = []) { self.fields = fields }
    public init(dictionaryLiteral elements: (String, String)...) {
        self.fields = elements.map { (name: $0.0, value: $0.1) }
    }

    public static func == (lhs: HTTPHeaderList, rhs: HTTPHeaderList) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    /// The first value of `name`.
    public func first(_ name: String) -> String? { values(name).first }

    /// Every comma-separated element of every `name` field, trimmed, empty ones dropped
    /// (RFC 9110 §5.6.1 list syntax).
    public func tokens(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
    }

    /// Whether the `name` list holds `token`, compared case-insensitively.
    public func containsToken(_ token: String, in name: String) -> Bool {
        tokens(name).contains { $0.lowercased() == token.lowercased() }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    public mutating func remove(_ name: String) {
        fields.removeAll { $0.name.lowercased() == name.lowercased() }
    }

    public mutating func replace(_ name: String, _ value: String) {
        remove(name)
        add(name, value)
    }
}
