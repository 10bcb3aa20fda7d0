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
        fields.compactMap { $0.name.equalsIgnoringASCIICase(name) ? $0.value : nil }
    }

    /// The first value of `name`.
    public func first(_ name: String) -> String? {
        fields.first { $0.name.equalsIgnoringASCIICase(name) }?.value
    }

    /// Every comma-separated element of every `name` field, trimmed, empty ones dropped
    /// (RFC 9110 §5.6.1 list syntax).
    public func tokens(_ name: String) -> [String] {
        var tokens: [String] = []
        forEachToken(of: name) { tokens.append(String($0)) }
        return tokens
    }

    /// Whether the `name` list holds `token`, compared case-insensitively. Allocates nothing: it is
    /// asked a few times of every upgrade request and every backend's 101.
    public func containsToken(_ token: String, in name: String) -> Bool {
        var found = false
        forEachToken(of: name) { element in
            if !found && element.equalsIgnoringASCIICase(token) { found = true }
        }
        return found
    }

    /// Calls `body` with each non-empty, trimmed list element of every `name` field, in order.
    func forEachToken(of name: String, _ body: (Substring) -> Void) {
        for field in fields where field.name.equalsIgnoringASCIICase(name) {
            let value = field.value[...]
            var start = value.startIndex
            while start < value.endIndex {
                let end = value[start...].firstIndex(of: ",") ?? value.endIndex
                let element = value[start..<end].trimmingSpacesSlice()
                if !element.isEmpty { body(element) }
                start = end < value.endIndex ? value.index(after: end) : end
            }
        }
    }

    public mutating func add(_ name: String, _ value: String) { fields.append((name, value)) }

    public mutating func remove(_ name: String) {
        fields.removeAll { $0.name.equalsIgnoringASCIICase(name) }
    }

    public mutating func replace(_ name: String, _ value: String) {
        remove(name)
        add(name, value)
    }
}

extension StringProtocol {
    /// Equality ignoring the case of ASCII letters, without lowercasing copies: field names and
    /// the tokens compared here are ASCII (RFC 9110 §5.1, §5.6.2); other bytes compare exactly.
    public func equalsIgnoringASCIICase(_ other: some StringProtocol) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        return utf8.elementsEqual(other.utf8) { a, b in
            a == b || (a | 0x20 == b | 0x20 && (0x61...0x7A).contains(a | 0x20))
        }
    }

    /// The text without leading and trailing spaces and tabs (RFC 9110 `OWS`), as a slice.
    func trimmingSpacesSlice() -> SubSequence {
        var start = startIndex
        var end = endIndex
        while start < end, self[start] == " " || self[start] == "\t" { start = index(after: start) }
        while end > start {
            let before = index(before: end)
            guard self[before] == " " || self[before] == "\t" else { break }
            end = before
        }
        return self[start..<end]
    }

    /// ``trimmingSpacesSlice()`` as a `String`.
    func trimmingSpaces() -> String { String(trimmingSpacesSlice()) }
}
