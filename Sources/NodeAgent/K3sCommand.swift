#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import KubeClient
import Reconcilers
import YAML

struct K3sCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "k3s",
        abstract: "K3s release helpers.",
        subcommands: [K3sPin.self]
    )
}

/// `nodeagent k3s pin VERSION`: writes `spec.k3s.version` and the release's real `sha256` (the
/// `k3s` line of its `sha256sum-amd64.txt`) into a platform.yaml, leaving the rest of the file,
/// comments included, as it was.
struct K3sPin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pin",
        abstract: "Pin a K3s release: write spec.k3s.version and its sha256 into platform.yaml.",
        discussion: """
            Reads DOWNLOAD-URL/VERSION/sha256sum-amd64.txt (the + of the version as %2B, as GitHub serves release assets) and takes \
            the line for the amd64 binary `k3s`. The file must already have a spec.k3s section; nothing else in it changes.
            """
    )

    @Argument(help: "The K3s release, such as v1.35.6+k3s1.")
    var version: String

    @Option(name: .long, help: ArgumentHelp("The platform.yaml to change.", valueName: "FILE"))
    var file = "platform.yaml"

    @Option(name: .long, help: ArgumentHelp("Where releases are published (a mirror); default: spec.k3s.downloadURL of the file.", valueName: "URL"))
    var downloadURL: String?

    func run() async throws {
        let release: K3sVersion
        do {
            release = try K3sVersion(parsing: version)
        } catch {
            throw ValidationError(error.message)
        }
        // Parsed, not validated: pinning is how a file refused for its K3s version is fixed.
        let bytes: [UInt8]
        let root: YAMLNode
        do {
            bytes = try FileReading.read(file)
            root = try YAMLParser().parseDocument(bytes, file: file)
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ExitCode(1)
        }
        guard let k3sNode = root["spec"]?["k3s"], k3sNode.mapping != nil else {
            Terminal.error("\(file): no spec.k3s section to pin; add one (version, sha256) first")
            throw ExitCode(1)
        }
        let base = (downloadURL ?? k3sNode["downloadURL"]?.scalar?.text ?? "https://github.com/k3s-io/k3s/releases/download").trimmingTrailingSlash
        let url = "\(base)/\(release.description.split(separator: "+", omittingEmptySubsequences: false).joined(separator: "%2B"))/sha256sum-amd64.txt"
        let sums: String
        do {
            sums = try await Self.fetch(url)
        } catch {
            Terminal.error("cannot read \(url): \(error)")
            throw ExitCode(1)
        }
        guard let sha = Self.binaryChecksum(in: sums) else {
            Terminal.error("\(url) has no line for the k3s binary (\"<sha256>  k3s\")")
            throw ExitCode(1)
        }
        guard let versionNode = k3sNode["version"], let shaNode = k3sNode["sha256"] else {
            Terminal.error("\(file): spec.k3s needs version and sha256 fields to replace")
            throw ExitCode(1)
        }
        var text = bytes
        // The later field first, so the earlier one's position still holds.
        for (node, value) in [(versionNode, release.description), (shaNode, "\"\(sha)\"")].sorted(by: { $0.0.mark > $1.0.mark }) {
            guard let replaced = Self.replacingScalar(at: node.mark, in: text, with: Array(value.utf8)) else {
                Terminal.error("\(file):\(node.mark): cannot find the value to replace")
                throw ExitCode(1)
            }
            text = replaced
        }
        do {
            _ = try DesiredStateLoader.load(text, file: file)
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            Terminal.error("\(file) was left unchanged")
            throw ExitCode(1)
        }
        let files = RootedFileSystem(root: "/")
        let path = WorkingDirectory.absolute(file)
        try files.write(path, text, mode: (try? files.mode(path)) ?? nil ?? 0o644)
        print("\(file): spec.k3s pinned to \(release) (sha256 \(sha), from \(url))")
    }

    static func fetch(_ url: String) async throws -> String {
        var template = Array("/tmp/nodeagent-pin-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }   // read back only, never executed
        guard fd >= 0 else { throw ValidationError("cannot create a temp file") }
        let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer {
            close(fd)
            unlink(path)
        }
        _ = try await HTTPDownload.fetch(url, to: fd, maxSize: 1 << 20, onChunk: { _ in })
        return String(decoding: try FileReading.read(path, maxSize: 1 << 20), as: UTF8.self)
    }

    /// The checksum on the line naming the amd64 binary, `k3s` (sha256sum's `HASH  NAME` or
    /// `HASH *NAME`), as K3s's install.sh picks it.
    static func binaryChecksum(in sums: String) -> String? {
        for line in sums.split(whereSeparator: \.isNewline) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 2, fields[1] == "k3s" || fields[1] == "*k3s" else { continue }
            let hash = String(fields[0]).lowercased()
            if hash.count == 64, hash.allSatisfy(\.isHexDigit) { return hash }
        }
        return nil
    }

    /// The file with the scalar that starts at `mark` (plain, or quoted) replaced; lines are
    /// split on LF only, so a CRLF file keeps its line ends. (The marks count characters; the
    /// fields replaced here are ASCII, as is everything before them on their line in any file
    /// `validate` accepts.)
    static func replacingScalar(at mark: Mark, in bytes: [UInt8], with value: [UInt8]) -> [UInt8]? {
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        guard mark.line >= 1, mark.line <= lines.count else { return nil }
        let line = lines[mark.line - 1]
        let start = mark.column - 1
        guard start >= 0, start < line.count else { return nil }
        var end = start
        let quote = line[start]
        if quote == UInt8(ascii: "\"") || quote == UInt8(ascii: "'") {
            end = start + 1
            while end < line.count, line[end] != quote || (quote == UInt8(ascii: "\"") && line[end - 1] == UInt8(ascii: "\\")) { end += 1 }
            guard end < line.count else { return nil }
            end += 1
        } else {
            while end < line.count, !Array(",}]#\r".utf8).contains(line[end]) { end += 1 }
            while end > start, line[end - 1] == UInt8(ascii: " ") || line[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        }
        lines[mark.line - 1] = Array(line[..<start]) + value + Array(line[end...])
        return Array(lines.joined(separator: [0x0A]))
    }

}

extension String {
    fileprivate var trimmingTrailingSlash: String { hasSuffix("/") ? String(dropLast()) : self }
}
