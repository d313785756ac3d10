#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"
#include "xml/xmlstream.h"

#define ROOT_OPEN                                                                                  \
	"<stream:stream xmlns='jabber:client' "                                                    \
	"xmlns:stream='http://etherx.jabber.org/streams'>"

static void assert_ser(const struct xml_el *e, const char *parent_ns, const char *want)
{
	struct buf b = BUF_INIT;
	xml_serialize(e, parent_ns, &b);
	buf_addc(&b, '\0');
	assert_string_equal(buf_head(&b), want);
	buf_free(&b);
}

static void test_tree_ops(void **state)
{
	(void)state;
	struct arena *a = arena_new(0);
	struct xml_el *m = xml_el_new(a, "jabber:client", "message");
	assert_string_equal(m->ns, "jabber:client");
	assert_string_equal(m->name, "message");
	assert_false(xml_is_text(m));

	xml_set_attr(a, m, "to", "a@b");
	xml_set_attr(a, m, "type", "chat");
	xml_set_attr(a, m, "to", "c@d");
	xml_set_attr_ns(a, m, XML_NS_XML, "lang", "en");
	assert_string_equal(xml_attr(m, "to"), "c@d");
	assert_string_equal(xml_attr(m, "type"), "chat");
	assert_null(xml_attr(m, "lang"));
	assert_string_equal(xml_attr_ns(m, XML_NS_XML, "lang"), "en");
	/* Replacing keeps the order; removing unlinks. */
	assert_string_equal(m->attrs->name, "to");
	xml_set_attr(a, m, "to", NULL);
	assert_null(xml_attr(m, "to"));
	assert_string_equal(m->attrs->name, "type");
	xml_set_attr(a, m, "nothing", NULL);

	xml_add_text(a, m, "  ", 2);
	struct xml_el *body = xml_add_child(a, m, "jabber:client", "body");
	xml_add_text(a, body, "hel", 3);
	xml_add_text(a, body, "lo\0x", 4);
	/* Adjacent text merges into one node. */
	assert_int_equal(xml_count_children(body), 1);
	assert_int_equal(body->first->text_len, 7);
	assert_memory_equal(body->first->text, "hello\0x", 8);
	struct xml_el *x = xml_add_child(a, m, "urn:x", "x");
	xml_add_text(a, m, "tail", 4);
	struct xml_el *body2 = xml_add_child(a, m, "urn:other", "body");
	assert_int_equal(xml_count_children(m), 5);
	assert_ptr_equal(body->parent, m);

	assert_ptr_equal(xml_child(m, "jabber:client", "body"), body);
	assert_ptr_equal(xml_child(m, "urn:other", "body"), body2);
	assert_ptr_equal(xml_child(m, NULL, "body"), body);
	assert_ptr_equal(xml_child(m, NULL, "x"), x);
	assert_null(xml_child(m, "urn:y", "x"));
	assert_null(xml_child(m, "jabber:client", "nothing"));
	assert_ptr_equal(xml_first_el(m), body);
	assert_ptr_equal(xml_next_el(body), x);
	assert_ptr_equal(xml_next_el(x), body2);
	assert_null(xml_next_el(body2));
	assert_null(xml_first_el(body));
	assert_string_equal(xml_text(a, m), "  tail");
	assert_string_equal(xml_text(a, x), "");

	/* Deep copy: independent of the source arena. */
	struct arena *b = arena_new(0);
	struct xml_el *c = xml_copy(b, m);
	assert_null(c->parent);
	struct buf before = BUF_INIT, after = BUF_INIT;
	xml_serialize(m, "", &before);

	/* Remove first, middle and last. */
	struct xml_el *first = m->first;
	xml_remove(first);
	assert_null(first->parent);
	assert_ptr_equal(m->first, body);
	xml_remove(x);
	assert_ptr_equal(body->next->next, body2);
	xml_remove(body2);
	assert_int_equal(xml_count_children(m), 2);
	assert_ptr_equal(m->last->next, NULL);
	assert_true(xml_is_text(m->last));
	xml_append(m, body2);
	assert_ptr_equal(m->last, body2);
	xml_remove(body2);
	xml_remove(body2); /* detached: no-op */

	arena_free(a);
	xml_serialize(c, "", &after);
	assert_int_equal(before.len, after.len);
	assert_memory_equal(before.data, after.data, before.len);
	buf_free(&before);
	buf_free(&after);
	arena_free(b);
}

static void test_serialize_ns(void **state)
{
	(void)state;
	struct arena *a = arena_new(0);
	struct xml_el *iq = xml_el_new(a, "jabber:client", "iq");
	xml_set_attr(a, iq, "type", "get");
	struct xml_el *q = xml_add_child(a, iq, "jabber:iq:roster", "query");
	xml_add_child(a, q, "jabber:iq:roster", "item");
	struct xml_el *n = xml_add_child(a, q, "", "plain");
	xml_add_child(a, n, "", "inner");
	assert_ser(iq, "jabber:client",
		   "<iq type='get'><query xmlns='jabber:iq:roster'><item/>"
		   "<plain xmlns=''><inner/></plain></query></iq>");
	assert_ser(iq, "",
		   "<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:roster'>"
		   "<item/><plain xmlns=''><inner/></plain></query></iq>");
	assert_ser(iq, NULL,
		   "<iq xmlns='jabber:client' type='get'><query xmlns='jabber:iq:roster'>"
		   "<item/><plain xmlns=''><inner/></plain></query></iq>");
	arena_free(a);
}

static void test_serialize_escape(void **state)
{
	(void)state;
	struct arena *a = arena_new(0);
	struct xml_el *e = xml_el_new(a, "jabber:client", "body");
	xml_set_attr(a, e, "v", "a&b<c>d\"e'f]]>");
	xml_add_text(a, e, "a&b<c>d\"e'f]]>", 14);
	assert_ser(e, "jabber:client",
		   "<body v='a&amp;b&lt;c&gt;d&quot;e&apos;f]]&gt;'>"
		   "a&amp;b&lt;c&gt;d\"e'f]]&gt;</body>");
	arena_free(a);

	/* Characters XML 1.0 cannot carry become U+FFFD; line ends survive. */
	a = arena_new(0);
	e = xml_el_new(a, "jabber:client", "body");
	static const char txt[] =
	    "\x01|\0|\xff|\xc0\xaf|\xed\xa0\x80|\xef\xbf\xbe|\xe2\x82|"
	    "\xe0\x80\xaf|\xf4\x90\x80\x80|\xc3\xa9\xe2\x98\xba\xf0\x9f\x98\x80|\r\n\t\x7f";
	xml_add_text(a, e, txt, sizeof(txt) - 1);
	xml_set_attr(a, e, "v", "\t\n\r\x1f\xf5\x80\x80\x80");
	assert_ser(e, "jabber:client",
		   "<body v='&#9;&#10;&#13;\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
		   "\xef\xbf\xbd'>"
		   "\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
		   "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
		   "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
		   "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
		   "\xc3\xa9\xe2\x98\xba\xf0\x9f\x98\x80|&#13;\n\t\x7f</body>");
	arena_free(a);
}

static void test_serialize_qualified(void **state)
{
	(void)state;
	struct arena *a = arena_new(0);
	struct xml_el *e = xml_el_new(a, "jabber:client", "message");
	xml_set_attr_ns(a, e, XML_NS_XML, "lang", "en");
	xml_set_attr_ns(a, e, "urn:a", "x", "1");
	xml_set_attr(a, e, "to", "t");
	xml_set_attr_ns(a, e, "urn:b", "y", "2");
	xml_set_attr_ns(a, e, "urn:a", "z", "3");
	xml_set_attr_ns(a, e, "jabber:client", "w", "4");
	struct xml_el *c = xml_add_child(a, e, "jabber:client", "c");
	xml_set_attr_ns(a, c, "urn:b", "y", "5");
	assert_ser(e, "jabber:client",
		   "<message xmlns:ns0='urn:a' xmlns:ns1='urn:b' xmlns:ns2='jabber:client' "
		   "xml:lang='en' ns0:x='1' to='t' ns1:y='2' ns0:z='3' ns2:w='4'>"
		   "<c xmlns:ns0='urn:b' ns0:y='5'/></message>");
	arena_free(a);

	/* What cannot be written is dropped, never written malformed. */
	a = arena_new(0);
	e = xml_el_new(a, "jabber:client", "message");
	xml_set_attr(a, e, "xmlns", "urn:evil");
	xml_set_attr(a, e, "a b", "1");
	xml_set_attr(a, e, "p:q", "1");
	xml_set_attr(a, e, "", "1");
	xml_set_attr(a, e, "1a", "1");
	xml_set_attr_ns(a, e, "http://www.w3.org/2000/xmlns/", "p", "urn:p");
	xml_set_attr(a, e, "ok", "1");
	xml_set_attr(a, e, "\xc3\xa9-1.x", "1");
	xml_add_child(a, e, "jabber:client", "bad name");
	xml_add_child(a, e, "jabber:client", "bad>");
	xml_add_child(a, e, XML_NS_XML, "x");
	xml_add_child(a, e, "jabber:client", "\xc0\xaf");
	xml_add_child(a, e, "jabber:client", "good");
	assert_ser(e, "jabber:client", "<message ok='1' \xc3\xa9-1.x='1'><good/></message>");
	arena_free(a);
}

/* Parses one stream of top-level elements into trees kept in `a`. */
struct collect {
	struct arena *a;
	struct xml_el *els[8];
	size_t n;
};

static void col_element(void *ud, struct xml_el *el, struct arena *arena)
{
	struct collect *c = ud;
	assert_true(c->n < 8);
	c->els[c->n++] = xml_copy(c->a, el);
	arena_free(arena);
}

static const struct xs_callbacks col_cbs = {NULL, col_element, NULL};

static void parse_all(struct collect *c, const char *body, size_t len)
{
	struct xmlstream *xs = xmlstream_new(&col_cbs, c, NULL);
	assert_int_equal(xmlstream_feed(xs, ROOT_OPEN, strlen(ROOT_OPEN)), strlen(ROOT_OPEN));
	ssize_t k = xmlstream_feed(xs, body, len);
	if (k < 0)
		fail_msg("%s: %.*s", xmlstream_error_text(xs), (int)len, body);
	assert_int_equal(k, len);
	xmlstream_free(xs);
}

static bool tree_equal(const struct xml_el *x, const struct xml_el *y)
{
	if (xml_is_text(x) || xml_is_text(y))
		return xml_is_text(x) && xml_is_text(y) && x->text_len == y->text_len &&
		       memcmp(x->text, y->text, x->text_len) == 0;
	if (strcmp(x->ns, y->ns) != 0 || strcmp(x->name, y->name) != 0)
		return false;
	const struct xml_attr *p = x->attrs, *q = y->attrs;
	for (; p && q; p = p->next, q = q->next)
		if (strcmp(p->ns, q->ns) != 0 || strcmp(p->name, q->name) != 0 ||
		    strcmp(p->value, q->value) != 0)
			return false;
	if (p || q)
		return false;
	const struct xml_el *c = x->first, *d = y->first;
	for (; c && d; c = c->next, d = d->next)
		if (!tree_equal(c, d))
			return false;
	return !c && !d;
}

/* Each element survives serialize + parse unchanged. */
static void check_round_trip(struct xml_el *const *els, size_t n)
{
	struct buf out = BUF_INIT;
	for (size_t i = 0; i < n; i++)
		xml_serialize(els[i], "jabber:client", &out);
	struct collect again = {.a = arena_new(0)};
	parse_all(&again, buf_head(&out), buf_pending(&out));
	assert_int_equal(again.n, n);
	for (size_t i = 0; i < n; i++)
		if (!tree_equal(els[i], again.els[i]))
			fail_msg("element %zu differs after round trip: %.*s", i,
				 (int)buf_pending(&out), buf_head(&out));
	buf_free(&out);
	arena_free(again.a);
}

static void test_round_trip(void **state)
{
	(void)state;
	static const char in[] =
	    "<message to='juliet@example.com' type='chat' xml:lang='en'>"
	    "<body>a &amp; b &lt;c&gt; &quot;q&apos; &#x263A; &#13; x\r\ny<![CDATA[<&>]]></body>"
	    "<x xmlns='urn:x' xmlns:p='urn:p' xmlns:q='urn:q' p:a='1' q:b='&#9;2&#10;' p:c='3' "
	    "d=\"'\"><y xmlns:p='urn:other' p:a='4'><z xmlns=''>t<w/></z></y>"
	    "<s:v xmlns:s='jabber:client'/></x></message>"
	    "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>";
	struct collect c = {.a = arena_new(0)};
	parse_all(&c, in, sizeof(in) - 1);
	assert_int_equal(c.n, 2);
	/* Sanity: the parse saw what the input says. */
	struct xml_el *x = xml_child(c.els[0], "urn:x", "x");
	assert_non_null(x);
	assert_string_equal(xml_attr_ns(x, "urn:q", "b"), "\t2\n");
	assert_string_equal(xml_attr_ns(c.els[0], XML_NS_XML, "lang"), "en");
	assert_non_null(xml_child(x, "jabber:client", "v"));
	check_round_trip(c.els, c.n);

	/* A tree built by a module, with everything the serializer has to
	 * encode. */
	struct xml_el *m = xml_el_new(c.a, "jabber:client", "message");
	xml_set_attr(c.a, m, "v", " \t\r\n'\"<&> ");
	xml_set_attr_ns(c.a, m, "urn:a", "v", "1");
	xml_set_attr_ns(c.a, m, XML_NS_XML, "lang", "de");
	struct xml_el *b = xml_add_child(c.a, m, "urn:b", "b");
	xml_add_text(c.a, b, "line\r\nline\rend\t]]>", 18);
	xml_add_child(c.a, b, "", "none");
	xml_add_child(c.a, m, "jabber:client", "c");
	check_round_trip(&m, 1);
	arena_free(c.a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tree_ops),	     cmocka_unit_test(test_serialize_ns),
	    cmocka_unit_test(test_serialize_escape), cmocka_unit_test(test_serialize_qualified),
	    cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
