// Session id → its kernel. The pool only keeps the map; kernels start lazily on their first call.
import type { PythonKernel } from './kernel.js';

export class KernelPool<K extends Pick<PythonKernel, 'close'> = PythonKernel> {
  private readonly kernels = new Map<string, K>();

  /** The session's kernel, made by `factory` the first time. */
  get(sessionKey: string, factory: () => K): K {
    let kernel = this.kernels.get(sessionKey);
    if (!kernel) {
      kernel = factory();
      this.kernels.set(sessionKey, kernel);
    }
    return kernel;
  }

  peek(sessionKey: string): K | undefined {
    return this.kernels.get(sessionKey);
  }

  keys(): string[] {
    return [...this.kernels.keys()];
  }

  get size(): number {
    return this.kernels.size;
  }

  /** Close the session's kernel and forget it (session deleted or expired). */
  async stop(sessionKey: string): Promise<void> {
    const kernel = this.kernels.get(sessionKey);
    this.kernels.delete(sessionKey);
    await kernel?.close();
  }

  async closeAll(): Promise<void> {
    const all = [...this.kernels.values()];
    this.kernels.clear();
    await Promise.all(all.map((k) => k.close()));
  }
}
