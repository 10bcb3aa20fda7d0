import Testing

@testable import ReadyGateProxy

/// The start-up warm-up of generic type metadata (a runtime race seen once in CI: two event loops
/// instantiating the HTTP codec's metadata at once). The race itself cannot be provoked on demand;
/// this checks that the warm-up makes what it lists and can run any number of times.
@Suite("Type metadata warm-up")
struct TypeMetadataWarmUpTests {
    @Test func itTouchesTheCodecAndPoolTypesAndIsRepeatable() {
        #expect(TypeMetadataWarmUp.run() == 16)
        #expect(TypeMetadataWarmUp.run() == 16)
    }
}
