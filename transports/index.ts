/**
 * Transport registry: one provider per `transport.kind`. The REST API takes the accepted kinds from this object and
 * the worker creates senders through it; a kind is either here, complete, or not accepted anywhere.
 */
import type { Subscriber } from '../src/subscribers/model.ts';
import { httpsProvider } from './https/index.ts';
import type { SenderDeps, TransportProvider, TransportSender } from './port.ts';

export const transportProviders = {
  https: httpsProvider,
} satisfies Record<string, TransportProvider<{ kind: string }>>;

export type TransportKind = keyof typeof transportProviders;

export const transportKinds = Object.keys(transportProviders) as TransportKind[];

/** Validates the subscriber's stored transport config with its provider (throws a ZodError when invalid). */
export function createSenderFor(subscriber: Subscriber, deps: SenderDeps): TransportSender {
  const provider = transportProviders[subscriber.transport.kind as TransportKind] as TransportProvider<{ kind: string }> | undefined;
  if (!provider) throw Object.assign(new Error(`unknown transport kind "${subscriber.transport.kind}"`), { name: 'ZodError' });
  return provider.createSender(provider.configSchema.parse(subscriber.transport), deps);
}
