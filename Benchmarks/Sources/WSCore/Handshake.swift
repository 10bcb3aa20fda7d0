import Crypto
import NIOCore

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The bits of RFC 6455 both tools need: the accept value (swift-crypto's SHA-1, base64), and
/// finding the end of an HTTP head.
public enum WSHandshake {
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// `base64(SHA-1(key + GUID))`.
    public static func accept(key: String) -> String {
        Data(Insecure.SHA1.hash(data: Array((key + guid).utf8))).base64EncodedString()
    }

    /// A fixed, valid client key: the tools do not need fresh randomness.
    public static let clientKey = "dGhlIHNhbXBsZSBub25jZQ=="

    /// The client's upgrade request for `host:port`.
    public static func upgradeRequest(host: String, port: Int) -> String {
        "GET / HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(clientKey)\r\nSec-WebSocket-Version: 13\r\n\r\n"
    }

    /// The offset of the first byte after `\r\n\r\n` in `buffer`'s readable bytes, or nil.
    public static func endOfHead(in buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            let count = bytes.count
            guard count >= 4 else { return nil }
            for i in 0...(count - 4)
            where bytes[i] == 0x0D && bytes[i + 1] == 0x0A && bytes[i + 2] == 0x0D && bytes[i + 3] == 0x0A {
                return i + 4
            }
            return nil
        }
    }
}
