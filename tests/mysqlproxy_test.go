package tests

// A MySQL-protocol proxy that multiplexes client sessions over a small
// shared pool of server sessions, as RDS Proxy, ProxySQL, MaxScale and
// MySQL Router can: the tests of proxy_test.go run dlock through it. No
// such proxy is packaged on this machine, so it is built here, on the
// wire protocol, with nothing but the standard library.
//
// It does each client's handshake itself (any user, any password) and
// opens its server sessions to the real server with the credentials of
// the test DSN (mysql_native_password, or an empty password). Then it
// routes each command of a client to a server session by its mode:
//
//   - proxySession: each client gets its own server session for its whole
//     connection (session pooling: dlock works through it);
//   - proxyMultiplex: every command goes to the next free server session
//     of the shared pool, round robin;
//   - proxyPinOnLock: as proxyMultiplex, but a command that calls GET_LOCK
//     takes its server session out of the pool and pins the client to it
//     until the client disconnects, as ProxySQL does (the pool dials a
//     replacement).
//
// Replies are relayed packet by packet. Prepared statements are refused
// (the test DSNs interpolate parameters), and so are LOAD DATA LOCAL and
// compression; neither side uses CLIENT_DEPRECATE_EOF.

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // mysql_native_password is SHA-1 by definition
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// proxyMode is how the proxy routes a client's commands.
type proxyMode int

const (
	proxySession   proxyMode = iota // one server session per client connection
	proxyMultiplex                  // each command to the next free pooled session
	proxyPinOnLock                  // multiplex until the client's first GET_LOCK, then pinned
)

// Capability flags of the MySQL protocol the proxy uses.
const (
	capLongPassword  = 0x00000001
	capFoundRows     = 0x00000002
	capLongFlag      = 0x00000004
	capConnectWithDB = 0x00000008
	capProtocol41    = 0x00000200
	capTransactions  = 0x00002000
	capSecureConn    = 0x00008000
	capMultiResults  = 0x00020000
	capPluginAuth    = 0x00080000

	proxyCaps = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB | capProtocol41 |
		capTransactions | capSecureConn | capMultiResults | capPluginAuth

	statusMoreResults = 0x0008

	comQuit        = 0x01
	comQuery       = 0x03
	comStmtPrepare = 0x16
	comStmtClose   = 0x19
)

// mysqlProxy is the proxy. Its zero value is not usable: see startProxy.
type mysqlProxy struct {
	t    testing.TB
	ln   net.Listener
	dsn  *gomysql.Config // the real server
	size int             // server sessions in the shared pool

	mu      sync.Mutex
	free    *sync.Cond // signalled when a pooled server session becomes free
	mode    proxyMode
	pool    []*proxyBackend // the shared pool
	next    int             // round robin position in pool
	clients map[*proxyClient]struct{}
	closed  bool
	log     []proxyLogEntry
	// noJSONTable makes the proxy answer a statement that uses JSON_TABLE
	// as a server without it does (MariaDB before 10.6, MySQL before 8.0):
	// syntax error 1064. refusedJSON counts those answers.
	noJSONTable bool
	refusedJSON int
	wg          sync.WaitGroup
}

// proxyBackend is one server session of the proxy.
type proxyBackend struct {
	conn net.Conn
	id   int64 // its CONNECTION_ID(), from the server's handshake
	busy bool  // a command runs on it
}

// proxyClient is one client connection.
type proxyClient struct {
	conn net.Conn
	own  *proxyBackend // its own or pinned server session, if any
}

// proxyLogEntry is one query the proxy sent, and to which server session.
type proxyLogEntry struct {
	backend int64
	query   string
}

// startProxy starts a proxy in mode in front of the MySQL server of dsn,
// with size server sessions in its shared pool, stopped when the test
// ends.
func startProxy(t testing.TB, dsn string, mode proxyMode, size int) *mysqlProxy {
	t.Helper()
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("proxy: parse DSN: %v", err)
	}
	if cfg.Net != "tcp" {
		t.Skipf("proxy: the test server is reached over %q, not tcp", cfg.Net)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &mysqlProxy{t: t, ln: ln, dsn: cfg, size: size, mode: mode, clients: make(map[*proxyClient]struct{})}
	p.free = sync.NewCond(&p.mu)
	for range size {
		b, err := p.dial()
		if err != nil {
			_ = ln.Close()
			t.Fatalf("proxy: connect to %s: %v", cfg.Addr, err)
		}
		p.pool = append(p.pool, b)
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// DSN returns dsn with its address replaced by the proxy's.
func (p *mysqlProxy) DSN(dsn string) string {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		p.t.Fatalf("proxy: parse DSN: %v", err)
	}
	cfg.Addr = p.ln.Addr().String()
	return cfg.FormatDSN()
}

// setMode switches the routing. Leaving proxySession puts the clients' own
// server sessions into the shared pool.
func (p *mysqlProxy) setMode(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == proxySession && m != proxySession {
		for c := range p.clients {
			if c.own != nil {
				p.pool = append(p.pool, c.own)
				c.own = nil
			}
		}
	}
	p.mode = m
	p.free.Broadcast()
}

// sent returns the queries the proxy sent to server session id.
func (p *mysqlProxy) sent(id int64) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var qs []string
	for _, e := range p.log {
		if e.backend == id {
			qs = append(qs, e.query)
		}
	}
	return qs
}

// close stops the proxy: the listener, every client and server session.
func (p *mysqlProxy) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for c := range p.clients {
		_ = c.conn.Close()
		if c.own != nil {
			_ = c.own.conn.Close()
		}
	}
	for _, b := range p.pool {
		_ = b.conn.Close()
	}
	p.free.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *mysqlProxy) accept() {
	defer p.wg.Done()
	for n := uint32(1); ; n++ {
		conn, err := p.ln.Accept()
		if err != nil {
			return
		}
		c := &proxyClient{conn: conn}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = conn.Close()
			return
		}
		p.clients[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c, n)
	}
}

// serve runs one client connection: the handshake, then its commands.
func (p *mysqlProxy) serve(c *proxyClient, n uint32) {
	defer p.wg.Done()
	defer p.drop(c)
	if err := p.handshake(c.conn, n); err != nil {
		return
	}
	for {
		cmd, err := readPacket(c.conn)
		if err != nil || len(cmd.data) == 0 || cmd.data[0] == comQuit {
			return
		}
		switch cmd.data[0] {
		case comStmtPrepare:
			msg := errPacket("the test proxy does not route prepared statements")
			if p.refusesJSONTable(string(cmd.data[1:])) {
				msg = errPacketNumber(erParseError, "42000", "You have an error in your SQL syntax near 'JSON_TABLE'")
			}
			if writePacket(c.conn, 1, msg) != nil {
				return
			}
			continue
		case comStmtClose:
			continue // no reply
		}
		if cmd.data[0] == comQuery && p.refusesJSONTable(string(cmd.data[1:])) {
			if writePacket(c.conn, 1, errPacketNumber(erParseError, "42000", "You have an error in your SQL syntax near 'JSON_TABLE'")) != nil {
				return
			}
			continue
		}
		b, err := p.route(c, cmd.data)
		if err != nil {
			_ = writePacket(c.conn, 1, errPacket(err.Error()))
			return
		}
		err = relay(c.conn, b.conn, cmd)
		p.release(b)
		if err != nil {
			return
		}
	}
}

// drop ends a client: its own or pinned server session is closed with it,
// which frees the locks that session holds.
func (p *mysqlProxy) drop(c *proxyClient) {
	_ = c.conn.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.clients, c)
	if c.own != nil {
		_ = c.own.conn.Close()
		c.own = nil
	}
}

// route picks the server session for a command and marks it busy.
func (p *mysqlProxy) route(c *proxyClient, cmd []byte) (*proxyBackend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	query := ""
	if cmd[0] == comQuery {
		query = string(cmd[1:])
	}
	if c.own == nil && p.mode == proxySession {
		b, err := p.dial()
		if err != nil {
			return nil, err
		}
		c.own = b
	}
	b := c.own
	if b == nil {
		for b == nil {
			if p.closed {
				return nil, errors.New("proxy closed")
			}
			for i := range p.pool {
				k := (p.next + i) % len(p.pool)
				if !p.pool[k].busy {
					b, p.next = p.pool[k], k+1
					break
				}
			}
			if b == nil {
				p.free.Wait()
			}
		}
		if p.mode == proxyPinOnLock && strings.Contains(strings.ToUpper(query), "GET_LOCK(") {
			// Pinned: out of the pool, the client's own from now on.
			repl, err := p.dial()
			if err != nil {
				return nil, err
			}
			for i := range p.pool {
				if p.pool[i] == b {
					p.pool[i] = repl
				}
			}
			c.own = b
		}
	}
	b.busy = true
	if query != "" {
		p.log = append(p.log, proxyLogEntry{b.id, query})
	}
	return b, nil
}

// release marks a server session free after a command.
func (p *mysqlProxy) release(b *proxyBackend) {
	p.mu.Lock()
	b.busy = false
	p.free.Broadcast()
	p.mu.Unlock()
}

// packet is one protocol packet.
type packet struct {
	seq  byte
	data []byte
}

func readPacket(r io.Reader) (packet, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return packet{}, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if n == 0xffffff {
		return packet{}, errors.New("proxy: packets of 16 MiB and more are not supported")
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return packet{}, err
	}
	return packet{h[3], data}, nil
}

func writePacket(w io.Writer, seq byte, data []byte) error {
	buf := make([]byte, 4+len(data))
	buf[0], buf[1], buf[2], buf[3] = byte(len(data)), byte(len(data)>>8), byte(len(data)>>16), seq
	copy(buf[4:], data)
	_, err := w.Write(buf)
	return err
}

// errPacket is an ERR packet with the message (error 1105, HY000).
func errPacket(msg string) []byte {
	return errPacketNumber(1105, "HY000", msg)
}

// errPacketNumber is an ERR packet with an error number, a five-character
// SQLSTATE and a message.
func errPacketNumber(n uint16, state, msg string) []byte {
	b := []byte{0xff, byte(n), byte(n >> 8), '#'}
	b = append(b, state...)
	return append(b, msg...)
}

// erParseError is the server's syntax error.
const erParseError = 1064

// refusesJSONTable reports whether the proxy answers query with a syntax
// error, as a server without JSON_TABLE would, and counts it.
func (p *mysqlProxy) refusesJSONTable(query string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.noJSONTable || !strings.Contains(strings.ToUpper(query), "JSON_TABLE") {
		return false
	}
	p.refusedJSON++
	return true
}

// handshake does the server side of a client's handshake: any credentials
// are accepted.
func (p *mysqlProxy) handshake(conn net.Conn, id uint32) error {
	salt := []byte("dlock-test-proxy-salt") // 21 bytes: 8 + 13 with the NUL
	var h bytes.Buffer
	h.WriteByte(10)
	h.WriteString("8.0.0-dlock-test-proxy\x00")
	_ = binary.Write(&h, binary.LittleEndian, id)
	h.Write(salt[:8])
	h.WriteByte(0)
	_ = binary.Write(&h, binary.LittleEndian, uint16(proxyCaps&0xffff))
	h.WriteByte(45)                                           // utf8mb4_general_ci
	_ = binary.Write(&h, binary.LittleEndian, uint16(0x0002)) // autocommit
	_ = binary.Write(&h, binary.LittleEndian, uint16(proxyCaps>>16))
	h.WriteByte(byte(len(salt)))
	h.Write(make([]byte, 10))
	h.Write(salt[8:20])
	h.WriteByte(0)
	h.WriteString("mysql_native_password\x00")
	if err := writePacket(conn, 0, h.Bytes()); err != nil {
		return err
	}
	resp, err := readPacket(conn)
	if err != nil {
		return err
	}
	return writePacket(conn, resp.seq+1, []byte{0, 0, 0, 2, 0, 0, 0})
}

// dial opens a server session with the test DSN's credentials.
func (p *mysqlProxy) dial() (*proxyBackend, error) {
	conn, err := net.DialTimeout("tcp", p.dsn.Addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	b, err := backendHandshake(conn, p.dsn)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("proxy: handshake with %s: %w", p.dsn.Addr, err)
	}
	return b, nil
}

// backendHandshake does the client side of the handshake on conn.
func backendHandshake(conn net.Conn, cfg *gomysql.Config) (*proxyBackend, error) {
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = conn.SetDeadline(time.Time{}) }()
	hs, err := readPacket(conn)
	if err != nil {
		return nil, err
	}
	d := hs.data
	if len(d) < 1 || d[0] != 10 {
		return nil, fmt.Errorf("unexpected handshake %q", d)
	}
	end := bytes.IndexByte(d[1:], 0)
	if end < 0 {
		return nil, errors.New("short handshake")
	}
	pos := 1 + end + 1
	if len(d) < pos+4+8+1+2+1+2+2+1+10 {
		return nil, errors.New("short handshake")
	}
	id := int64(binary.LittleEndian.Uint32(d[pos:]))
	pos += 4
	salt := append([]byte(nil), d[pos:pos+8]...)
	pos += 8 + 1 + 2 + 1 + 2 + 2
	saltLen := int(d[pos])
	pos += 1 + 10
	if n := max(13, saltLen-8); pos+n <= len(d) {
		salt = append(salt, d[pos:pos+n-1]...) // without the trailing NUL
		pos += n
	}
	plugin := "mysql_native_password"
	if pos < len(d) {
		if e := bytes.IndexByte(d[pos:], 0); e >= 0 {
			plugin = string(d[pos : pos+e])
		} else {
			plugin = string(d[pos:])
		}
	}
	auth, err := authResponse(plugin, cfg.Passwd, salt)
	if err != nil {
		return nil, err
	}
	var r bytes.Buffer
	_ = binary.Write(&r, binary.LittleEndian, uint32(proxyCaps))
	_ = binary.Write(&r, binary.LittleEndian, uint32(16<<20))
	r.WriteByte(45)
	r.Write(make([]byte, 23))
	r.WriteString(cfg.User + "\x00")
	r.WriteByte(byte(len(auth)))
	r.Write(auth)
	r.WriteString(cfg.DBName + "\x00")
	r.WriteString(plugin + "\x00")
	seq := hs.seq + 1
	if err := writePacket(conn, seq, r.Bytes()); err != nil {
		return nil, err
	}
	for {
		resp, err := readPacket(conn)
		if err != nil {
			return nil, err
		}
		seq = resp.seq + 1
		switch {
		case len(resp.data) == 0:
			return nil, errors.New("empty auth reply")
		case resp.data[0] == 0x00:
			return &proxyBackend{conn: conn, id: id}, nil
		case resp.data[0] == 0xff:
			return nil, fmt.Errorf("server refused: %s", resp.data[min(len(resp.data), 9):])
		case resp.data[0] == 0xfe: // auth switch: plugin name, NUL, new salt
			rest := resp.data[1:]
			e := bytes.IndexByte(rest, 0)
			if e < 0 {
				return nil, errors.New("bad auth switch")
			}
			plugin = string(rest[:e])
			salt = bytes.TrimRight(rest[e+1:], "\x00")
			auth, err := authResponse(plugin, cfg.Passwd, salt)
			if err != nil {
				return nil, err
			}
			if err := writePacket(conn, seq, auth); err != nil {
				return nil, err
			}
		case resp.data[0] == 0x01 && len(resp.data) > 1 && resp.data[1] == 0x03:
			// caching_sha2_password: fast authentication passed; OK follows.
		default:
			return nil, fmt.Errorf("authentication the test proxy does not do (plugin %s, reply %x)", plugin, resp.data)
		}
	}
}

// authResponse scrambles password for plugin.
func authResponse(plugin, password string, salt []byte) ([]byte, error) {
	if password == "" {
		return nil, nil
	}
	if plugin != "mysql_native_password" {
		return nil, fmt.Errorf("the test proxy authenticates with a password only by mysql_native_password, not %s", plugin)
	}
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	h3 := sha1.New()
	h3.Write(salt[:min(len(salt), 20)])
	h3.Write(h2[:])
	out := h3.Sum(nil)
	for i := range out {
		out[i] ^= h1[i]
	}
	return out, nil
}

// relay sends a command to a server session and its whole reply back to
// the client.
func relay(client, server net.Conn, cmd packet) error {
	if err := writePacket(server, cmd.seq, cmd.data); err != nil {
		return err
	}
	fwd := func() (packet, error) {
		pk, err := readPacket(server)
		if err != nil {
			return pk, err
		}
		if len(pk.data) == 0 {
			return pk, errors.New("proxy: empty reply packet")
		}
		return pk, writePacket(client, pk.seq, pk.data)
	}
	if cmd.data[0] != comQuery {
		_, err := fwd() // OK, ERR or EOF: one packet
		return err
	}
	for {
		first, err := fwd()
		if err != nil {
			return err
		}
		switch first.data[0] {
		case 0x00:
			if okStatus(first.data)&statusMoreResults == 0 {
				return nil
			}
			continue
		case 0xff:
			return nil
		case 0xfb:
			return errors.New("proxy: LOAD DATA LOCAL is not supported")
		}
		// A result set: column definitions, EOF, rows, EOF (or ERR).
		more, err := relayResultSet(fwd)
		if err != nil || !more {
			return err
		}
	}
}

// relayResultSet relays the rest of a result set after its column count,
// and reports whether another result follows.
func relayResultSet(fwd func() (packet, error)) (more bool, err error) {
	for eofs := 0; ; {
		pk, err := fwd()
		if err != nil {
			return false, err
		}
		switch {
		case pk.data[0] == 0xff:
			return false, nil
		case pk.data[0] == 0xfe && len(pk.data) < 9:
			if eofs++; eofs == 2 {
				return len(pk.data) >= 5 && binary.LittleEndian.Uint16(pk.data[3:])&statusMoreResults != 0, nil
			}
		}
	}
}

// okStatus returns the status flags of an OK packet.
func okStatus(d []byte) uint16 {
	pos := 1
	for range 2 { // affected rows, last insert id: length-encoded integers
		if pos >= len(d) {
			return 0
		}
		switch d[pos] {
		case 0xfc:
			pos += 3
		case 0xfd:
			pos += 4
		case 0xfe:
			pos += 9
		default:
			pos++
		}
	}
	if pos+2 > len(d) {
		return 0
	}
	return binary.LittleEndian.Uint16(d[pos:])
}
