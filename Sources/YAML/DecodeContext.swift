/// Collects the diagnostics of one decode, and finds where any field of the document starts,
/// so checks that run later, on typed values, can still point at `FILE:LINE:COL`.
///
/// One per decode, used from one task; not `Sendable`.
public final class DecodeContext {
    public let file: String
    /// The document, for finding a field's position by its path.
    public let root: YAMLNode?
    public private(set) var diagnostics: [Diagnostic] = []

    public init(file: String, root: YAMLNode? = nil) {
        self.file = file
        self.root = root
    }

    /// The mark of the node at `path`, or of its nearest ancestor present in the document.
    /// Found by walking the tree on demand: only errors need it, so a valid file pays nothing.
    public func mark(for path: FieldPath) -> Mark {
        guard var node = root else { return .start }
        for component in path.components {
            let next: YAMLNode?
            switch component {
            case .key(let key): next = node[key]
            case .index(let i): next = node.sequence.flatMap { i < $0.count ? $0[i] : nil }
            }
            guard let next else { break }
            node = next
        }
        return node.mark
    }

    /// Records a problem at a node and returns the error to throw, so call sites read
    /// `throw context.fail(...)`.
    @discardableResult
    public func fail(_ code: Diagnostic.Code, _ message: String, at mark: Mark, path: FieldPath) -> DecodeFailure {
        diagnostics.append(Diagnostic(file: file, mark: mark, path: path, code: code, message: message))
        return DecodeFailure()
    }

    /// Records a problem found after decoding, at the recorded position of `path`.
    public func fail(_ code: Diagnostic.Code, _ message: String, path: FieldPath) {
        fail(code, message, at: mark(for: path), path: path)
    }

    /// The diagnostics in file order (stable for equal positions).
    public var sortedDiagnostics: [Diagnostic] {
        diagnostics.enumerated().sorted { a, b in
            a.element.mark == b.element.mark ? a.offset < b.offset : a.element.mark < b.element.mark
        }.map(\.element)
    }
}

/// Thrown while decoding once the problem is recorded in the `DecodeContext`.
public struct DecodeFailure: Error, Sendable {
    public init() {}
}

/// A value that can be read from a YAML node, reporting problems to a `DecodeContext`.
public protocol YAMLDecodable {
    /// Reads a value, or records why not and throws `DecodeFailure`.
    /// - Parameters:
    ///   - node: the node to read.
    ///   - path: where the node sits in the document, for messages.
    ///   - context: where problems go.
    init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws
}

/// The problem with a scalar's text, before the context adds the file position.
public struct InvalidValue: Error, Sendable {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }
}

/// A value written as one string scalar and parsed from its text (ports, CIDRs, versions…).
public protocol YAMLScalarParsable: YAMLDecodable {
    init(parsing text: String) throws(InvalidValue)
}

extension YAMLScalarParsable {
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let text = try String(yaml: node, path: path, context: context)
        do {
            self = try Self(parsing: text)
        } catch {
            throw context.fail(.invalidValue, error.message, at: node.mark, path: path)
        }
    }
}

extension String: YAMLDecodable {
    /// Any scalar but null and booleans reads as its text: `version: 16.3` is the string "16.3".
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        guard let scalar = node.scalar, !node.isNull else {
            throw context.fail(.typeMismatch, "expected a string, found \(node.kindDescription)", at: node.mark, path: path)
        }
        if case .bool = ResolvedScalar(scalar) {
            throw context.fail(.typeMismatch, "expected a string, found a boolean; quote it (\"\(scalar.text)\") if you mean the text",
                               at: node.mark, path: path)
        }
        self = scalar.text
    }
}

extension Int: YAMLDecodable {
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        guard let scalar = node.scalar, case .int(let value) = ResolvedScalar(scalar) else {
            throw context.fail(.typeMismatch, "expected an integer, found \(node.kindDescription)", at: node.mark, path: path)
        }
        self = value
    }
}

extension Bool: YAMLDecodable {
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        guard let scalar = node.scalar, case .bool(let value) = ResolvedScalar(scalar) else {
            let hint = ["yes", "no", "on", "off", "y", "n"].contains(node.scalar?.text.lowercased() ?? "")
                ? " (YAML 1.2: write true or false, not \(node.scalar?.text ?? ""))" : ""
            throw context.fail(.typeMismatch, "expected true or false, found \(node.kindDescription)\(hint)",
                               at: node.mark, path: path)
        }
        self = value
    }
}

extension Array: YAMLDecodable where Element: YAMLDecodable {
    /// Reads every element, reporting each bad one, and fails if any did.
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        guard let items = node.sequence else {
            throw context.fail(.typeMismatch, "expected a sequence, found \(node.kindDescription)", at: node.mark, path: path)
        }
        var out: [Element] = []
        out.reserveCapacity(items.count)
        var failed = false
        for (i, item) in items.enumerated() {
            do {
                out.append(try Element(yaml: item, path: path.appending(index: i), context: context))
            } catch {
                failed = true
            }
        }
        if failed { throw DecodeFailure() }
        self = out
    }
}
