package dev.headrace.functions;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A Redis connection speaking RESP2, just what the enrich step's lookups need: AUTH, SELECT and
 * pipelined commands (all written, then all replies read). Not thread-safe: one owner thread.
 */
final class Resp implements AutoCloseable {
    /** An error reply ({@code -ERR …}): the server answered, the command was refused. */
    static final class ReplyError extends IOException {
        private static final long serialVersionUID = 1L;

        ReplyError(String message) {
            super(message);
        }
    }

    private final Socket socket;
    private final InputStream in;
    private final OutputStream out;

    Resp(String host, int port, int timeoutMs, String username, String password, int db, boolean ssl) throws IOException {
        socket = ssl ? tls(host) : new Socket();
        try {
            socket.connect(new InetSocketAddress(host, port), timeoutMs);
            if (ssl) {
                ((javax.net.ssl.SSLSocket) socket).startHandshake();
            }
            socket.setSoTimeout(timeoutMs);
            socket.setTcpNoDelay(true);
            in = new BufferedInputStream(socket.getInputStream(), 1 << 16);
            out = new BufferedOutputStream(socket.getOutputStream(), 1 << 16);
            List<String[]> hello = new ArrayList<>();
            if (password != null) {
                hello.add(username != null ? new String[] {"AUTH", username, password} : new String[] {"AUTH", password});
            }
            if (db != 0) {
                hello.add(new String[] {"SELECT", Integer.toString(db)});
            }
            if (!hello.isEmpty()) {
                for (Object reply : pipeline(hello)) {
                    if (reply instanceof ReplyError) {
                        throw (ReplyError) reply;
                    }
                }
            }
        } catch (IOException e) {
            socket.close();
            throw e;
        }
    }

    /** A TLS socket that checks the server's certificate and host name (as redis-py's ssl=True does). */
    private static Socket tls(String host) throws IOException {
        javax.net.ssl.SSLSocket s = (javax.net.ssl.SSLSocket) javax.net.ssl.SSLSocketFactory.getDefault().createSocket();
        javax.net.ssl.SSLParameters params = s.getSSLParameters();
        params.setEndpointIdentificationAlgorithm("HTTPS");
        if (!host.matches("[0-9.]+|.*:.*")) { // SNI names a host, never an address
            params.setServerNames(java.util.List.of(new javax.net.ssl.SNIHostName(host)));
        }
        s.setSSLParameters(params);
        return s;
    }

    /** Each command's reply, in order: a byte[] (bulk), String (status), Long, List, null, or a ReplyError. */
    List<Object> pipeline(List<String[]> commands) throws IOException {
        for (String[] command : commands) {
            write(command);
        }
        out.flush();
        List<Object> replies = new ArrayList<>(commands.size());
        for (int i = 0; i < commands.size(); i++) {
            replies.add(read());
        }
        return replies;
    }

    private void write(String[] command) throws IOException {
        out.write('*');
        out.write(Integer.toString(command.length).getBytes(StandardCharsets.US_ASCII));
        out.write('\r');
        out.write('\n');
        for (String part : command) {
            byte[] bytes = part.getBytes(StandardCharsets.UTF_8);
            out.write('$');
            out.write(Integer.toString(bytes.length).getBytes(StandardCharsets.US_ASCII));
            out.write('\r');
            out.write('\n');
            out.write(bytes);
            out.write('\r');
            out.write('\n');
        }
    }

    private Object read() throws IOException {
        int kind = in.read();
        if (kind < 0) {
            throw new EOFException("Redis closed the connection");
        }
        String line = line();
        switch (kind) {
            case '+':
                return line;
            case '-':
                return new ReplyError(line);
            case ':':
                return Long.parseLong(line);
            case '$': {
                int length = Integer.parseInt(line);
                if (length < 0) {
                    return null;
                }
                byte[] data = in.readNBytes(length);
                if (data.length < length || in.read() != '\r' || in.read() != '\n') {
                    throw new EOFException("Redis closed the connection mid-reply");
                }
                return data;
            }
            case '*': {
                int count = Integer.parseInt(line);
                if (count < 0) {
                    return null;
                }
                List<Object> items = new ArrayList<>(count);
                for (int i = 0; i < count; i++) {
                    items.add(read());
                }
                return items;
            }
            default:
                throw new IOException("not a RESP reply: '" + (char) kind + "'");
        }
    }

    private String line() throws IOException {
        ByteArrayOutputStream buffer = new ByteArrayOutputStream(16);
        while (true) {
            int b = in.read();
            if (b < 0) {
                throw new EOFException("Redis closed the connection mid-reply");
            }
            if (b == '\r') {
                if (in.read() != '\n') {
                    throw new IOException("malformed RESP line");
                }
                return buffer.toString(StandardCharsets.UTF_8);
            }
            buffer.write(b);
        }
    }

    @Override
    public void close() {
        try {
            socket.close();
        } catch (IOException ignored) {
            // closing: nothing left to do
        }
    }
}
