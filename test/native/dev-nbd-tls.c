/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NBD over TCP with TLS (nbd.c + nbd_tls.c) under ASan/UBSan, in one
 * process: a blk driver side exporting on TCP loopback with STARTTLS
 * required, a blk device side on a disk image, and an OpenSSL client.
 *  - before TLS: NBD_OPT_GO gets NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME
 *    closes the connection, a flood of options is cut off;
 *  - with the CA's client certificate: write, read back, compare (through
 *    the TLS pump both ways, larger than its buffers);
 *  - a client certificate of another CA, one of the CA with a name not
 *    allowed, and none: refused, nothing served;
 *  - certificate rotation: new files are served to the next connection;
 *  - start-up policy: TCP without TLS or with tcpplain beyond loopback is
 *    -EPERM, a missing TLS file -ENOENT, an over-long path -ENAMETOOLONG.
 * Certificates are made here with the OpenSSL API.
 */
#include "devhand.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "devside.h"

#define NBD_OPT_EXPORT_NAME  1u
#define NBD_OPT_LIST	     3u
#define NBD_OPT_STARTTLS     5u
#define NBD_OPT_GO	     7u
#define NBD_REP_ACK	     1u
#define NBD_REP_INFO	     3u
#define NBD_REP_ERR_TLS_REQD 0x80000005u
#define NBD_CMD_READ	     0
#define NBD_CMD_WRITE	     1
#define NBD_CMD_DISC	     2
#define IO_BYTES	     (768u * 1024) /* > the pump's 256 KiB buffers, <= max request (1 MiB) */

static char g_dir[128];

/* ------------------------------------------------------------------ */
/* Certificates                                                         */
/* ------------------------------------------------------------------ */

enum cert_kind { CA, SERVER, CLIENT };

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	CHECK(e != NULL);
	CHECK(X509_add_ext(x, e, -1) == 1);
	X509_EXTENSION_free(e);
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, enum cert_kind kind, X509 *issuer,
		       EVP_PKEY *ikey)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *n;

	CHECK(x != NULL);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	add_ext(x, issuer, NID_basic_constraints, kind == CA ? "critical,CA:TRUE" : "CA:FALSE");
	if (kind == CA)
		add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
	if (kind == SERVER) {
		add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
		add_ext(x, issuer, NID_subject_alt_name, "IP:127.0.0.1");
	}
	if (kind == CLIENT)
		add_ext(x, issuer, NID_ext_key_usage, "clientAuth");
	CHECK(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
	return x;
}

static void dpath(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", g_dir, name);
}

/* name.pem and name-key.pem in g_dir, written to a temporary name and renamed (a new inode). */
static void write_pem(const char *name, X509 *x, EVP_PKEY *key)
{
	char p[256], tmp[270];
	FILE *f;

	dpath(p, sizeof(p), name);
	snprintf(tmp, sizeof(tmp), "%s.pem.tmp", p);
	f = fopen(tmp, "w");
	CHECK(f && PEM_write_X509(f, x) == 1 && fclose(f) == 0);
	strcat(p, ".pem");
	CHECK(rename(tmp, p) == 0);
	if (!key)
		return;
	dpath(p, sizeof(p), name);
	snprintf(tmp, sizeof(tmp), "%s-key.pem.tmp", p);
	f = fopen(tmp, "w");
	CHECK(f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1 && fclose(f) == 0);
	strcat(p, "-key.pem");
	CHECK(rename(tmp, p) == 0);
}

struct pki {
	EVP_PKEY *ca_key, *rogue_key;
	X509 *ca, *rogue;
};

static void make_identity(struct pki *k, const char *name, const char *cn, enum cert_kind kind,
			  bool rogue)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x;

	CHECK(key != NULL);
	x = make_cert(key, cn, kind, rogue ? k->rogue : k->ca, rogue ? k->rogue_key : k->ca_key);
	write_pem(name, x, key);
	X509_free(x);
	EVP_PKEY_free(key);
}

/* ------------------------------------------------------------------ */
/* Client                                                               */
/* ------------------------------------------------------------------ */

struct client {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

static int c_write(struct client *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t r =
			c->ssl ? SSL_write(c->ssl, p, (int)len) : send(c->fd, p, len, MSG_NOSIGNAL);

		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* 0, or -1 when the server closed (or the TLS session failed) first */
static int c_read(struct client *c, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = c->ssl ? SSL_read(c->ssl, p, (int)len) : recv(c->fd, p, len, 0);

		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static void c_connect(struct client *c, int port)
{
	struct sockaddr_in a;
	struct timeval tv = { 20, 0 };
	uint8_t g[18];
	uint32_t flags = htonl(3);

	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(c->fd >= 0);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* a hang fails the test */
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(c->fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	CHECK(c_read(c, g, sizeof(g)) == 0);
	CHECK(!memcmp(g, "NBDMAGICIHAVEOPT", 16));
	CHECK(c_write(c, &flags, 4) == 0);
}

static void c_close(struct client *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	SSL_CTX_free(c->ctx);
	close(c->fd);
	ERR_clear_error();
}

static int c_option(struct client *c, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];
	uint32_t v;

	memcpy(h, "IHAVEOPT", 8);
	v = htonl(opt);
	memcpy(h + 8, &v, 4);
	v = htonl(len);
	memcpy(h + 12, &v, 4);
	return c_write(c, h, 16) || (len && c_write(c, data, len)) ? -1 : 0;
}

/* Reply type of one option reply (payload skipped), or 0 when the server closed. */
static uint32_t c_reply(struct client *c, uint32_t opt)
{
	uint8_t h[20], skip[512];
	uint32_t v, type, len;

	if (c_read(c, h, sizeof(h)))
		return 0;
	memcpy(&v, h + 8, 4);
	CHECK_EQ(ntohl(v), opt);
	memcpy(&type, h + 12, 4);
	memcpy(&len, h + 16, 4);
	len = ntohl(len);
	CHECK(len <= sizeof(skip));
	if (len && c_read(c, skip, len))
		return 0;
	return ntohl(type);
}

/* STARTTLS and the client side of the handshake with certificate files cert/key (NULL: none). */
static int c_starttls(struct client *c, const char *cert, const char *key)
{
	char ca[256];

	CHECK(c_option(c, NBD_OPT_STARTTLS, NULL, 0) == 0);
	CHECK_EQ(c_reply(c, NBD_OPT_STARTTLS), NBD_REP_ACK);
	dpath(ca, sizeof(ca), "ca.pem");
	c->ctx = SSL_CTX_new(TLS_client_method());
	CHECK(c->ctx != NULL);
	CHECK(SSL_CTX_load_verify_locations(c->ctx, ca, NULL) == 1);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (cert) {
		CHECK(SSL_CTX_use_certificate_file(c->ctx, cert, SSL_FILETYPE_PEM) == 1);
		CHECK(SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) == 1);
	}
	c->ssl = SSL_new(c->ctx);
	CHECK(c->ssl != NULL);
	CHECK(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), "127.0.0.1") == 1);
	SSL_set_fd(c->ssl, c->fd);
	return SSL_connect(c->ssl) == 1 ? 0 : -1;
}

/* NBD_OPT_GO for "vop": the reply type that ended it (ACK on success, 0 if closed). */
static uint32_t c_go(struct client *c)
{
	uint8_t d[4 + 3 + 2] = { 0, 0, 0, 3, 'v', 'o', 'p', 0, 0 };
	uint32_t t;

	if (c_option(c, NBD_OPT_GO, d, sizeof(d)))
		return 0;
	while ((t = c_reply(c, NBD_OPT_GO)) == NBD_REP_INFO)
		;
	return t;
}

static void c_request(struct client *c, uint16_t type, uint64_t handle, uint64_t off, uint32_t len)
{
	uint8_t r[28];
	uint32_t v32 = htonl(0x25609513u);
	uint16_t v16 = 0;
	uint64_t v64;

	memcpy(r, &v32, 4);
	memcpy(r + 4, &v16, 2);
	v16 = htons(type);
	memcpy(r + 6, &v16, 2);
	memcpy(r + 8, &handle, 8);
	v64 = htobe64(off);
	memcpy(r + 16, &v64, 8);
	v32 = htonl(len);
	memcpy(r + 24, &v32, 4);
	CHECK(c_write(c, r, sizeof(r)) == 0);
}

static void c_simple_reply(struct client *c, uint64_t handle)
{
	uint8_t h[16];
	uint32_t v;

	CHECK(c_read(c, h, sizeof(h)) == 0);
	memcpy(&v, h, 4);
	CHECK_EQ(ntohl(v), 0x67446698u);
	memcpy(&v, h + 4, 4);
	CHECK_EQ(ntohl(v), 0); /* error */
	CHECK(!memcmp(h + 8, &handle, 8));
}

/* A mutually authenticated session as name: write a pattern, read it back. */
static void session_ok(int port, const char *name, uint8_t seed, char *peer_cn, size_t cnlen)
{
	struct client c;
	char cert[256], key[256], f[64];
	uint8_t *w = malloc(IO_BYTES), *r = malloc(IO_BYTES);
	X509 *srv;
	unsigned i;

	CHECK(w && r);
	for (i = 0; i < IO_BYTES; i++)
		w[i] = (uint8_t)(i * 31u + seed);
	snprintf(f, sizeof(f), "%s.pem", name);
	dpath(cert, sizeof(cert), f);
	snprintf(f, sizeof(f), "%s-key.pem", name);
	dpath(key, sizeof(key), f);
	c_connect(&c, port);
	CHECK(c_starttls(&c, cert, key) == 0);
	CHECK_EQ(c_go(&c), NBD_REP_ACK);
	srv = SSL_get1_peer_certificate(c.ssl);
	CHECK(srv != NULL);
	X509_NAME_get_text_by_NID(X509_get_subject_name(srv), NID_commonName, peer_cn, (int)cnlen);
	X509_free(srv);
	c_request(&c, NBD_CMD_WRITE, 1, 4096, IO_BYTES);
	CHECK(c_write(&c, w, IO_BYTES) == 0);
	c_simple_reply(&c, 1);
	c_request(&c, NBD_CMD_READ, 2, 4096, IO_BYTES);
	c_simple_reply(&c, 2);
	CHECK(c_read(&c, r, IO_BYTES) == 0);
	CHECK(!memcmp(w, r, IO_BYTES));
	c_request(&c, NBD_CMD_DISC, 3, 0, 0);
	c_close(&c);
	free(w);
	free(r);
}

/* name's certificate (or none) is refused: no option is ever answered. */
static void session_refused(int port, const char *name)
{
	struct client c;
	char cert[256], key[256], f[64];

	if (name) {
		snprintf(f, sizeof(f), "%s.pem", name);
		dpath(cert, sizeof(cert), f);
		snprintf(f, sizeof(f), "%s-key.pem", name);
		dpath(key, sizeof(key), f);
	}
	c_connect(&c, port);
	/* TLS 1.3: the client's handshake may complete before the server checked its certificate */
	if (c_starttls(&c, name ? cert : NULL, name ? key : NULL) == 0)
		CHECK_EQ(c_go(&c), 0);
	c_close(&c);
}

/* ------------------------------------------------------------------ */

struct side {
	char win[128];
	char desc[1024];
	struct devside *h;
	struct devside_dev d;
	const char *err;
	int rc;
};

/* The driver side of desc (parsed first: a value too long is refused there, never cut). */
static void *open_driver(void *arg)
{
	struct side *s = arg;

	s->rc = devside_parse("blk-driver", s->desc, &s->d);
	if (s->rc == 0)
		s->rc = devside_open(s->win, 16u << 20, 0, &s->d, 1, &s->h, &s->err);
	return NULL;
}

/* Start-up policy: a driver side with desc fails with rc before waiting for any device. */
static void start_refused(const char *desc, int rc)
{
	struct side s;

	memset(&s, 0, sizeof(s));
	t_path(s.win, sizeof(s.win), "nbdtls-refused");
	snprintf(s.desc, sizeof(s.desc), "%s", desc);
	open_driver(&s);
	if (s.rc != rc)
		fprintf(stderr, "desc %s: rc %d (%s), expected %d\n", desc, s.rc,
			s.err ? s.err : "", rc);
	CHECK_EQ(s.rc, rc);
	CHECK(s.h == NULL);
	unlink(s.win);
}

int main(void)
{
	struct pki k;
	struct side drv;
	static struct devside_dev dd;
	struct devside *dev;
	pthread_t t;
	char disk[128], ep[256], cert[256], key[256], ca[256], cn[64], desc[1024], longp[700];
	const char *p;
	int port = 0;
	unsigned i;

	signal(SIGPIPE, SIG_IGN);
	snprintf(g_dir, sizeof(g_dir), "%s/vop-nbdtls-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(g_dir) != NULL);
	k.ca_key = EVP_EC_gen("P-256");
	k.rogue_key = EVP_EC_gen("P-256");
	CHECK(k.ca_key && k.rogue_key);
	k.ca = make_cert(k.ca_key, "test-ca", CA, NULL, NULL);
	k.rogue = make_cert(k.rogue_key, "rogue-ca", CA, NULL, NULL);
	write_pem("ca", k.ca, NULL);
	make_identity(&k, "server", "card-b", SERVER, false);
	make_identity(&k, "ops", "ops-admin", CLIENT, false);
	make_identity(&k, "card", "card-x", CLIENT, false);
	make_identity(&k, "rogue", "ops-admin", CLIENT, true);
	dpath(cert, sizeof(cert), "server.pem");
	dpath(key, sizeof(key), "server-key.pem");
	dpath(ca, sizeof(ca), "ca.pem");

	/* start-up policy */
	start_refused("1:tcp=-1:qsize=8:seg=256", -EPERM);
	start_refused("1:tcp=-1:tcpplain:tcphost=0.0.0.0:qsize=8:seg=256", -EPERM);
	start_refused("1:tcp=-1:tcpplain:tcphost=--:qsize=8:seg=256", -EPERM); /* IPv6 "::" */
	start_refused("1:tcp=-1:tcpplain:tcphost=example.org:qsize=8:seg=256", -EINVAL);
	snprintf(desc, sizeof(desc), "1:tcp=-1:tlscert=%s/missing.pem:tlskey=%s:qsize=8:seg=256",
		 g_dir, key);
	start_refused(desc, -ENOENT);
	snprintf(desc, sizeof(desc), "1:tcp=-1:tlscert=%s:tlskey=%s:qsize=8:seg=256", key,
		 cert); /* swapped */
	start_refused(desc, -EINVAL);
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	snprintf(desc, sizeof(desc), "1:tcp=-1:tlscert=%s:tlskey=%s:qsize=8:seg=256", longp, key);
	start_refused(desc, -ENAMETOOLONG);

	/* the export: TLS required on TCP loopback, clients ops-admin only */
	memset(&drv, 0, sizeof(drv));
	t_path(drv.win, sizeof(drv.win), "nbdtls");
	snprintf(drv.desc, sizeof(drv.desc),
		 "1:tcp=-1:tlscert=%s:tlskey=%s:tlsca=%s:tlsnames=ops-admin,backup:qsize=8:seg=256",
		 cert, key, ca);
	t_disk(disk, sizeof(disk), "nbdtls-disk", 8u << 20);
	snprintf(desc, sizeof(desc), "1:file=%s", disk);
	CHECK(pthread_create(&t, NULL, open_driver, &drv) == 0);
	CHECK_EQ(devside_parse("blk-device", desc, &dd), 0);
	CHECK_EQ(devside_open(drv.win, 0, 0, &dd, 1, &dev, NULL), 0);
	CHECK(pthread_join(t, NULL) == 0);
	if (drv.rc)
		fprintf(stderr, "driver side: %s: %d\n", drv.err ? drv.err : "", drv.rc);
	CHECK_EQ(drv.rc, 0);
	devside_endpoints(drv.h, ep, sizeof(ep));
	p = strstr(ep, "nbd1-port ");
	CHECK(p != NULL);
	port = atoi(p + 10);
	CHECK(port > 0);

	/* before TLS */
	{
		struct client c;
		uint8_t d[9] = { 0, 0, 0, 3, 'v', 'o', 'p', 0, 0 }, b;

		c_connect(&c, port);
		CHECK(c_option(&c, NBD_OPT_GO, d, sizeof(d)) == 0);
		CHECK_EQ(c_reply(&c, NBD_OPT_GO), NBD_REP_ERR_TLS_REQD);
		CHECK(c_option(&c, NBD_OPT_EXPORT_NAME, "vop", 3) == 0);
		c_request(&c, NBD_CMD_READ, 9, 0, 4096);
		CHECK(recv(c.fd, &b, 1, 0) == 0); /* closed, nothing sent */
		c_close(&c);

		c_connect(&c, port);
		for (i = 0; i < 40; i++) {
			if (c_option(&c, NBD_OPT_LIST, NULL, 0))
				break;
			if (c_reply(&c, NBD_OPT_LIST) == 0)
				break;
		}
		CHECK(i <= 16);
		c_close(&c);
	}

	/* the allowed client */
	session_ok(port, "ops", 1, cn, sizeof(cn));
	CHECK(!strcmp(cn, "card-b"));

	/* refused certificates */
	session_refused(port, "rogue");
	session_refused(port, "card");
	session_refused(port, NULL);

	/* rotation: a new server certificate is served to the next connection */
	make_identity(&k, "server", "card-b-rotated", SERVER, false);
	session_ok(port, "ops", 2, cn, sizeof(cn));
	CHECK(!strcmp(cn, "card-b-rotated"));

	devside_close(drv.h);
	devside_close(dev);
	unlink(drv.win);
	unlink(disk);
	{
		static const char *const files[] = {
			"ca.pem",   "server.pem",   "server-key.pem", "ops.pem",      "ops-key.pem",
			"card.pem", "card-key.pem", "rogue.pem",      "rogue-key.pem"
		};
		char f[256];

		for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			dpath(f, sizeof(f), files[i]);
			unlink(f);
		}
		rmdir(g_dir);
	}
	X509_free(k.ca);
	X509_free(k.rogue);
	EVP_PKEY_free(k.ca_key);
	EVP_PKEY_free(k.rogue_key);
	printf("PASS dev-nbd-tls\n");
	return T_PASS;
}
