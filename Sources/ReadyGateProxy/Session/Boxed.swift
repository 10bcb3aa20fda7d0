/// A value by reference: a handler or session that needs a rarely used value keeps a nil pointer to
/// it, not the value's bytes inline, for the (often long) time it does not need it.
final class Boxed<Value> {
    var value: Value

    init(_ value: Value) {
        self.value = value
    }
}

@available(*, unavailable)
extension Boxed: Sendable {}
