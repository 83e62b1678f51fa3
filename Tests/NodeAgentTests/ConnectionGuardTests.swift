import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
@testable import NodeAgent
import Testing

/// The status server's connection guard in an EmbeddedChannel: counts, caps, and the request
/// deadline on a clock the test advances (no sleeping).
@Suite struct ConnectionGuardTests {
    static func channel(_ guard: ConnectionGuard, from address: String) throws -> (EmbeddedChannel, EmbeddedEventLoop) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let remote = try SocketAddress(ipAddress: address, port: 40000)
        try channel.connect(to: remote).wait()
        channel.remoteAddress = remote
        try channel.pipeline.syncOperations.addHandler(ConnectionGuard.Handler(guard: `guard`))
        loop.run()
        return (channel, loop)
    }

    @Test func perAddressLoopbackAndTotalCapsHoldAndSlotsAreReleased() throws {
        let g = ConnectionGuard(limits: .init(perPeer: 2, loopbackTotal: 3, total: 5))
        var open: [EmbeddedChannel] = []
        for address in ["10.8.0.2", "10.8.0.2", "10.8.0.2"] { open.append(try Self.channel(g, from: address).0) }
        #expect(open.map(\.isActive) == [true, true, false], "a third connection from one address is closed")
        #expect(g.open(peer: "10.8.0.2") == 2)
        // Loopback: three addresses, one shared share of three.
        for address in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"] { open.append(try Self.channel(g, from: address).0) }
        #expect(open.suffix(4).map(\.isActive) == [true, true, true, false], "loopback's share is full")
        #expect(g.open() == 5)
        // The server is full: a new VPN peer waits for a slot...
        let waiting = try Self.channel(g, from: "10.8.0.3").0
        #expect(!waiting.isActive)
        // ...which a closed connection gives back.
        _ = try open[0].finish()
        #expect(g.open() == 4 && g.open(peer: "10.8.0.2") == 1)
        #expect(try Self.channel(g, from: "10.8.0.3").0.isActive)
        #expect(ConnectionGuard.peerKey("::ffff:10.8.0.2") == "10.8.0.2")
    }

    @Test func aRequestThatDoesNotArriveWholeInTimeIsCutOff() throws {
        let g = ConnectionGuard(limits: .init(requestTimeout: .seconds(10)))
        let (channel, loop) = try Self.channel(g, from: "10.8.0.2")
        let head = HTTPRequest(method: .post, scheme: nil, authority: "10.8.0.1:9430", path: "/sync")
        try channel.writeInbound(HTTPRequestPart.head(head))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "a")))
        loop.advanceTime(by: .seconds(9))
        try channel.writeInbound(HTTPRequestPart.body(ByteBuffer(string: "b")))
        #expect(channel.isActive, "within the deadline")
        loop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "a body trickled past the deadline is cut off")
        #expect(g.open() == 0)

        // A whole request stops the clock until the response is sent; then the next request has
        // the same time to arrive.
        let (kept, keptLoop) = try Self.channel(g, from: "10.8.0.2")
        try kept.writeInbound(HTTPRequestPart.head(head))
        try kept.writeInbound(HTTPRequestPart.end(nil))
        keptLoop.advanceTime(by: .seconds(60))
        #expect(kept.isActive, "the server's own time is not the client's")
        try kept.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
        try kept.writeOutbound(HTTPResponsePart.end(nil))
        keptLoop.advanceTime(by: .seconds(11))
        #expect(!kept.isActive, "an idle kept-alive connection is closed")
    }
}
