/* Namespaces. */
#ifndef PARLEY_NS_H
#define PARLEY_NS_H

#define NS_STREAMS	 "http://etherx.jabber.org/streams"
#define NS_CLIENT	 "jabber:client"
#define NS_SERVER	 "jabber:server"
#define NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_TLS		 "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL		 "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND		 "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION	 "urn:ietf:params:xml:ns:xmpp-session"
#define NS_SASL_CB	 "urn:xmpp:sasl-cb:0"			 /* XEP-0440 */
#define NS_STREAM_LIMITS "urn:xmpp:stream-limits:0"		 /* XEP-0478 */
#define NS_PING		 "urn:xmpp:ping"			 /* XEP-0199 */
#define NS_VERSION	 "jabber:iq:version"			 /* XEP-0092 */
#define NS_DISCO_INFO	 "http://jabber.org/protocol/disco#info" /* XEP-0030 */
#define NS_DISCO_ITEMS	 "http://jabber.org/protocol/disco#items"

#endif
