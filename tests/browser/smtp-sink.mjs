// A tiny SMTP sink for the browser tests: it accepts every message (no STARTTLS,
// no AUTH) on 127.0.0.1 and keeps the raw DATA, one file per message.
//
//   node smtp-sink.mjs MAILDIR     listens on a free port, prints it, writes MAILDIR/<n>.eml
//
// The tests read MAILDIR with readMail() from mail.mjs.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node smtp-sink.mjs MAILDIR');
  process.exit(2);
}
fs.mkdirSync(dir, { recursive: true });
let seq = 0;

const server = net.createServer((sock) => {
  sock.setEncoding('latin1'); // byte-transparent: keep every octet as one char
  let buf = '';
  let inData = false;
  let data = [];
  let envelope = { from: '', to: [] };
  const reply = (line) => sock.write(`${line}\r\n`);
  reply('220 127.0.0.1 sesame-test-sink ESMTP');

  sock.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (inData) {
        if (line === '.') {
          inData = false;
          seq += 1;
          const name = `${String(seq).padStart(4, '0')}.eml`;
          const head = `X-Sink-From: ${envelope.from}\r\nX-Sink-To: ${envelope.to.join(', ')}\r\n`;
          // Write to a temporary name first so a reader never sees half a message.
          const tmp = path.join(dir, `.${name}.tmp`);
          fs.writeFileSync(tmp, head + data.join('\r\n') + '\r\n', 'latin1');
          fs.renameSync(tmp, path.join(dir, name));
          data = [];
          envelope = { from: '', to: [] };
          reply('250 2.0.0 queued');
        } else {
          data.push(line.startsWith('..') ? line.slice(1) : line);
        }
        continue;
      }
      const verb = line.slice(0, 4).toUpperCase();
      const arg = line.slice(4).trim();
      switch (verb) {
        case 'EHLO':
          sock.write('250-127.0.0.1\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n');
          break;
        case 'HELO':
          reply('250 127.0.0.1');
          break;
        case 'MAIL':
          envelope = { from: arg.replace(/^FROM:\s*/i, ''), to: [] };
          reply('250 2.1.0 ok');
          break;
        case 'RCPT':
          envelope.to.push(arg.replace(/^TO:\s*/i, ''));
          reply('250 2.1.5 ok');
          break;
        case 'DATA':
          inData = true;
          data = [];
          reply('354 end data with <CR><LF>.<CR><LF>');
          break;
        case 'RSET':
          envelope = { from: '', to: [] };
          reply('250 2.0.0 ok');
          break;
        case 'NOOP':
          reply('250 2.0.0 ok');
          break;
        case 'QUIT':
          reply('221 2.0.0 bye');
          sock.end();
          break;
        default:
          reply('502 5.5.2 command not implemented');
      }
    }
  });
  sock.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
