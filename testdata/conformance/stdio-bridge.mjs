// An HTTP-to-stdio bridge for the MCP conformance suite, which speaks only
// Streamable HTTP: it serves http://127.0.0.1:<port>/mcp and relays raw
// JSON-RPC messages to and from a stdio MCP server started per session.
//
//   node stdio-bridge.mjs [--port N] -- COMMAND [ARGS...]
//
// Prints the URL on stdout once it listens (port 0, the default, lets the
// OS pick a free port). Exits, killing every child, when its stdin closes or
// on SIGTERM/SIGINT.
//
// Each HTTP session (one `initialize`) gets its own child process: a stdio
// server serves one client. The MCP TypeScript SDK's transports do the
// protocol framing on both sides; no MCP logic runs here, messages are
// passed through unchanged. The only decision the bridge makes is which
// HTTP stream carries a server-initiated message, because stdio does not
// say which request it belongs to (see `relatedRequest`).
//
// A session lives until the client sends DELETE or the bridge stops. The
// suite's client never sends DELETE, so a full run keeps its ~30 children
// (about 2 GB with server-everything) until the end.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

const args = process.argv.slice(2);
let port = 0;
if (args[0] === '--port') {
    port = Number(args[1]);
    args.splice(0, 2);
}
if (args[0] === '--') args.shift();
if (args.length === 0) {
    console.error('usage: stdio-bridge.mjs [--port N] -- COMMAND [ARGS...]');
    process.exit(2);
}
const [command, ...commandArgs] = args;
const log = (...what) => console.error('[stdio-bridge]', ...what);

/** Open sessions by Mcp-Session-Id. */
const sessions = new Map();

/** One HTTP session: a Streamable HTTP transport and the stdio child behind it. */
function newSession(allowedHosts) {
    const child = new StdioClientTransport({
        command,
        args: commandArgs,
        env: process.env, // the SDK would otherwise pass only HOME, PATH, ...
        stderr: 'inherit'
    });
    const front = new StreamableHTTPServerTransport({
        sessionIdGenerator: randomUUID,
        onsessioninitialized: id => sessions.set(id, session),
        enableDnsRebindingProtection: true,
        allowedHosts
    });
    // Client requests whose response has not been relayed yet, oldest first,
    // and the progress tokens they carry.
    const inFlight = [];
    const progressTokens = new Map();
    const session = { front, child, closed: false };

    // Stdio loses which request a server message belongs to. Progress goes
    // with the request that asked for it; any other server-initiated message
    // (log lines, sampling/elicitation requests) goes with the newest open
    // request, as an SDK server would send it while handling that request;
    // with none open it goes to the standalone GET stream.
    const relatedRequest = message => {
        if ('id' in message && !('method' in message)) return undefined; // a response
        const token = message.params?.progressToken;
        if (message.method === 'notifications/progress' && progressTokens.has(token)) {
            return progressTokens.get(token);
        }
        return inFlight.at(-1);
    };

    front.onmessage = message => {
        if ('method' in message && 'id' in message) {
            inFlight.push(message.id);
            const token = message.params?._meta?.progressToken;
            if (token !== undefined) progressTokens.set(token, message.id);
        }
        child.send(message).catch(e => log('to child:', e.message));
    };
    child.onmessage = message => {
        const related = relatedRequest(message);
        if ('id' in message && !('method' in message)) {
            const at = inFlight.indexOf(message.id);
            if (at >= 0) inFlight.splice(at, 1);
            for (const [token, id] of progressTokens) if (id === message.id) progressTokens.delete(token);
        }
        front.send(message, { relatedRequestId: related }).catch(e => log('to HTTP client:', e.message));
    };
    front.onerror = e => log('HTTP:', e.message);
    child.onerror = e => log('child:', e.message);
    // Either side closing ends the session (DELETE, child exit, shutdown).
    session.close = async () => {
        if (session.closed) return;
        session.closed = true;
        if (front.sessionId) sessions.delete(front.sessionId);
        await Promise.allSettled([front.close(), child.close()]);
    };
    front.onclose = () => void session.close();
    child.onclose = () => void session.close();
    session.ready = child.start();
    return session;
}

/** Reads and parses a JSON request body; undefined if it is not JSON. */
async function readJson(req) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    try {
        return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
        return undefined;
    }
}

function jsonError(res, status, message) {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

const server = http.createServer(async (req, res) => {
    try {
        const sessionId = req.headers['mcp-session-id'];
        const body = req.method === 'POST' ? await readJson(req) : undefined;
        let session = sessionId === undefined ? undefined : sessions.get(sessionId);
        if (sessionId !== undefined && !session) {
            return jsonError(res, 404, 'Session not found');
        }
        if (!session) {
            // No session yet: only an initialize request may open one.
            if (!(req.method === 'POST' && isInitializeRequest(body))) {
                return jsonError(res, 400, 'Bad Request: No valid session ID provided');
            }
            const { port } = server.address();
            session = newSession([`127.0.0.1:${port}`, `localhost:${port}`]);
            await session.ready;
            await session.front.handleRequest(req, res, body);
            // The transport refused it (a foreign Host header, say): no session.
            if (session.front.sessionId === undefined) void session.close();
            return;
        }
        await session.front.handleRequest(req, res, body);
    } catch (e) {
        log('request failed:', e);
        if (!res.headersSent) jsonError(res, 500, 'Internal bridge error');
    }
});

let shuttingDown = false;
async function shutdown() {
    if (shuttingDown) return;
    shuttingDown = true;
    server.close();
    server.closeAllConnections();
    await Promise.allSettled([...sessions.values()].map(s => s.close()));
    process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.resume();

server.listen(port, '127.0.0.1', () => {
    console.log(`http://127.0.0.1:${server.address().port}/mcp`);
});
